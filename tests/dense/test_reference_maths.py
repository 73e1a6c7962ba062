"""Golden values from the reference formulas (mmseg 0.30, mmpose 0.29, the face-alignment
literature), worked out by hand or in a scratch copy of the formulas outside the project:
mIoU with absent classes, NME with invisible points, FR/AUC, MSRA targets, quarter-offset
decoding at the map border, Taylor decoding of MSRA targets, the flip-test bias of an ideal
model, and how the losses are put together."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.integrate import simpson

from tasks.dense.heads import BiSeNetV1Head, FCNHead, HeatmapHead
from tasks.dense.heatmap import decode_heatmaps
from tasks.dense.landmark_report import LandmarkReport
from tasks.dense.landmarks import LandmarkModule
from tasks.dense.nme import NormalizedMeanError
from tasks.dense.segmentation import SegmentationModule
from tasks.dense.targets import encode_msra

SGD = functools.partial(torch.optim.SGD, lr=0.1)
SMALL = {"name": "resnet18", "small_input_stem": True}


# --- mIoU (mmseg: intersections and unions summed over the set, empty unions left out) -------------
def test_miou_on_an_accumulated_confusion_matrix_with_absent_classes():
    module = SegmentationModule(SMALL, functools.partial(FCNHead, head_channels=8), 5, SGD)
    batches = [
        (torch.tensor([[0, 1, 1, 2, 3]]), torch.tensor([[0, 0, 1, 1, 255]])),  # (pred, target)
        (torch.tensor([[0, 3, 0, 1]]), torch.tensor([[0, 3, 3, 1]])),
    ]
    for pred, target in batches:
        module.miou["test"](pred, target)
        module.test_iou(pred, target)
    # Over both batches, the ignored pixel left out (its prediction 3 too):
    #   class 0: TP 2, predicted 3, true 3 -> 2 / 4;  class 1: TP 2, predicted 3, true 3 -> 2 / 4
    #   class 2: predicted once, never true -> 0 / 1 (counted);  class 3: TP 1, predicted 1, true 2 -> 1 / 2
    #   class 4: neither predicted nor true -> no IoU, left out of the mean
    assert module.test_iou.compute()[:4].tolist() == pytest.approx([0.5, 0.5, 0.0, 0.5])
    assert torch.isnan(module.test_iou.compute()[4])
    assert module.miou["test"].compute().item() == pytest.approx(1.5 / 4)  # not the mean of per-batch mIoUs, 0.472


# --- NME, FR, AUC ------------------------------------------------------------------------------------
TARGET = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [2.0, 3.0]], [[0.0, 0.0], [0.0, 10.0], [5.0, 5.0]]])
PRED = torch.tensor([[[0.0, 0.0], [4.0, 3.0], [2.0, 3.0]], [[6.0, 8.0], [0.0, 10.0], [99.0, 99.0]]])
VISIBLE = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_nme_with_invisible_points_is_mmposes_mean_over_points():
    # mmpose's keypoint_nme: each visible point's error over its image's normaliser (|p0 - p1|), then one mean:
    # image 1: 0/4, 3/4, 0/4; image 2: 10/10, 0/10 (the third point is invisible) -> 1.75 / 5
    points = NormalizedMeanError("pair", (0, 1), average="points")
    points.update(PRED, TARGET, VISIBLE)
    assert points.compute().item() == pytest.approx(1.75 / 5)
    images = NormalizedMeanError("pair", (0, 1), average="images")  # per image first: (1/4 + 5/10) / 2
    images.update(PRED, TARGET, VISIBLE)
    assert images.compute().item() == pytest.approx(0.375)


def report_batch():
    """Four images of two points, the normaliser |p0 - p1| = 10, errors on point 0 only:
    per-image NME 0.02, 0.05, 0.12, 0.08."""
    target = torch.tensor([[[0.0, 0.0], [10.0, 0.0]]]).repeat(4, 1, 1)
    pred = target.clone()
    pred[:, 0, 1] = torch.tensor([0.4, 1.0, 2.4, 1.6])
    return pred, target, torch.ones(4, 2)


def test_failure_rate_and_auc_at_10_percent():
    pred, target, visible = report_batch()
    report = LandmarkReport("pair", (0, 1), "points", subsets=("a", "b"))
    report.update(pred[:2], target[:2], visible[:2], torch.tensor([1, 0]))
    report.update(pred[2:], target[2:], visible[2:], torch.tensor([1, 2]))
    out = {k: v.item() for k, v in report.compute().items()}
    # AUC@0.1 = mean of max(0, 1 - nme / 0.1) = (0.8 + 0.5 + 0 + 0.2) / 4; FR@0.1: 0.12 fails
    assert out["fr_10"] == pytest.approx(0.25) and out["auc_10"] == pytest.approx(0.375)
    assert out["nme"] == pytest.approx((0.04 + 0.10 + 0.24 + 0.16) / 8)
    # subset a = images 0 and 2, b = image 3
    assert (out["nme_a"], out["fr_10_a"], out["auc_10_a"]) == pytest.approx((0.28 / 4, 0.5, 0.4))
    assert (out["nme_b"], out["fr_10_b"], out["auc_10_b"]) == pytest.approx((0.08, 0.0, 0.2))
    # the literature's computation: Simpson's rule over the cumulative error curve on a 1e-4 grid
    xs = np.arange(0, 0.1 + 1e-4, 1e-4)
    nme = np.array([0.02, 0.05, 0.12, 0.08])
    curve = np.array([(nme <= x).mean() for x in xs])
    assert out["auc_10"] == pytest.approx(simpson(curve, x=xs) / 0.1, abs=2e-3)
    assert out["fr_10"] == pytest.approx(1 - curve[-1])


# --- MSRA targets (mmpose TopDownGenerateTarget, encoding="MSRA") ------------------------------------
def test_msra_targets_round_the_centre_cut_at_3_sigma_and_keep_weights_near_the_border():
    g = lambda d2: math.exp(-d2 / 8)  # noqa: E731  sigma 2
    points = torch.tensor(
        [
            [
                [13.9, 6.1],  # x/4 = 3.475 -> int(3.975) = 3; y/4 = 1.525 -> int(2.025) = 2
                [-10.0, 20.0],  # x/4 + 0.5 = -2.0 -> mu_x = -2 (off the map, window -8..4 on it)
                [-27.0, 20.0],  # -6.25 -> int() = -6, not floor's -7: the window reaches column 0
                [-31.0, 20.0],  # -7.25 -> -7: window -13..-1, none on the map, weight still 1
                [-35.0, 20.0],  # -8.25 -> -8: window ends at -2 < 0 -> weight 0
                [30.0, 30.0],
            ]
        ]
    )  # invisible -> weight 0
    visible = torch.tensor([[1.0, 1, 1, 1, 1, 0]])
    heat, weight = encode_msra(points, visible, (16, 16), stride=4, sigma=2)
    assert weight.tolist() == [[1, 1, 1, 1, 0, 0]]
    h = heat[0]
    assert h[0, 2, 3] == 1 and h[0, 2, 5].item() == pytest.approx(g(4)) and h[0, 4, 5].item() == pytest.approx(g(8))
    assert h[0, 2, 9].item() == pytest.approx(g(36)) and h[0, 2, 10] == 0 and h[0, 9, 3] == 0  # 3-sigma square cut
    assert h[0, 8, 9].item() == pytest.approx(g(72))  # a square, not a disc
    assert h[1, 5, 0].item() == pytest.approx(g(4)) and h[1, 5, 4].item() == pytest.approx(g(36)) and h[1, 5, 5] == 0
    assert h[2, 5, 0].item() == pytest.approx(g(36)) and h[2, 5, 1] == 0
    assert h[3].abs().sum() == 0 and h[4].abs().sum() == 0 and h[5].abs().sum() == 0


# --- decoding -----------------------------------------------------------------------------------------
def peaked(px: int, py: int, right: float, left: float, down: float, up: float, size: int = 8) -> torch.Tensor:
    heat = torch.zeros(1, 1, size, size)
    heat[0, 0, py, px] = 1.0
    for (x, y), v in (((px + 1, py), right), ((px - 1, py), left), ((px, py + 1), down), ((px, py - 1), up)):
        if 0 <= x < size and 0 <= y < size:
            heat[0, 0, y, x] = v
    return heat


@pytest.mark.parametrize(
    "px,py,expected",
    [
        (4, 4, (4.25, 3.75)),  # inside: a quarter cell towards the higher neighbour on each axis
        (6, 4, (6.25, 3.75)),  # px = W - 2 still refines
        (1, 4, (1.0, 4.0)),  # px = 1: mmpose asks 1 < px, so neither axis moves
        (4, 1, (4.0, 1.0)),  # py = 1: likewise
        (4, 6, (4.25, 5.75)),
        (0, 4, (0.0, 4.0)),
        (7, 4, (7.0, 4.0)),
    ],
)
def test_quarter_offset_follows_mmpose_at_the_map_border(px, py, expected):
    heat = peaked(px, py, right=0.6, left=0.3, down=0.2, up=0.5)
    decoded, score = decode_heatmaps(heat, stride=4, refine="quarter", encoding="msra")
    assert decoded[0, 0].tolist() == pytest.approx([4 * expected[0], 4 * expected[1]])  # msra: pixel = 4 * cell
    assert score.item() == 1.0
    # the per-axis rule (the previous "quarter") moves each axis whose two neighbours exist
    per_axis, _ = decode_heatmaps(heat, stride=1, refine="quarter_per_axis", encoding="msra")
    moves = (0.25 if 0 < px < 7 else 0.0, -0.25 if 0 < py < 7 else 0.0)
    assert per_axis[0, 0].tolist() == pytest.approx([px + moves[0], py + moves[1]])


@pytest.mark.parametrize("blur_kernel", [0, 11])
def test_taylor_decoding_of_msra_targets_returns_the_rounded_centre(blur_kernel):
    # An MSRA target is a Gaussian centred on the cell mu = int(x / 4 + 0.5): its log-heatmap has zero gradient
    # there, so the DARK/Taylor step (with or without DARK's blur) returns mu exactly, i.e. the encoding's rounding.
    points = torch.tensor([[[101.1, 77.9], [130.6, 133.3], [2.0, 60.2], [-1.0, 30.0], [250.3, 9.7]]])
    heat, _ = encode_msra(points, torch.ones(1, 5), (64, 64), stride=4)
    decoded, _ = decode_heatmaps(heat, 4, "taylor", blur_kernel=blur_kernel, encoding="msra")
    mu = torch.trunc(points / 4 + 0.5)
    assert torch.allclose(decoded, 4 * mu, atol=1e-4)
    quarter, _ = decode_heatmaps(heat, 4, "quarter", encoding="msra")  # equal neighbours: no quarter step
    assert torch.allclose(quarter, 4 * mu)


# --- flip test of an ideal model ----------------------------------------------------------------------
# x positions whose x / 4 + 0.5 and (255 - x) / 4 + 0.5 stay 0.02 cells away from an integer (no rounding ties).
XS = [
    60.3,
    64.01,
    67.72,
    71.43,
    75.14,
    78.85,
    82.56,
    86.27,
    93.69,
    97.4,
    101.11,
    104.82,
    108.53,
    112.24,
    115.95,
    119.66,
    123.37,
    127.08,
    130.79,
    134.5,
    138.21,
    141.92,
    145.63,
    149.34,
    156.76,
    160.47,
    164.18,
    167.89,
    171.6,
    175.31,
    179.02,
    182.73,
    186.44,
    190.15,
    193.86,
    197.57,
    201.28,
    208.7,
    212.41,
    216.12,
]
# mmpose 0.29 (MSRA targets of the true point and of the mirrored point, flip_back, shift_heatmap, average,
# post_process="default", transform_preds), computed in a scratch copy of its formulas:
MMPOSE_FLIP_X = [
    60.0,
    64.0,
    68.0,
    72.0,
    76.0,
    80.0,
    84.0,
    88.0,
    93.0,
    97.0,
    101.0,
    104.0,
    108.0,
    112.0,
    116.0,
    120.0,
    124.0,
    128.0,
    132.0,
    136.0,
    140.0,
    141.0,
    145.0,
    149.0,
    156.0,
    160.0,
    164.0,
    168.0,
    172.0,
    176.0,
    180.0,
    184.0,
    188.0,
    192.0,
    193.0,
    197.0,
    201.0,
    208.0,
    212.0,
    216.0,
]


def ideal_landmarker(encoding: str, decode: str, shift: bool) -> LandmarkModule:
    """A landmark module whose head returns the training target of the one point drawn in the
    image (a Gaussian blob whose centroid it reads), so only the flip-test maths acts."""
    module = LandmarkModule(
        SMALL,
        functools.partial(HeatmapHead, deconv_channels=[]),
        1,
        SGD,
        target_encoding=encoding,
        decode=decode,
        flip_test=True,
        shift_heatmap=shift,
    ).eval()
    module.flip_index = torch.tensor([0])

    def head_forward(x: torch.Tensor) -> torch.Tensor:
        w = x[:, 0] / x[:, 0].sum((-1, -2), keepdim=True)
        r = torch.arange(x.shape[-1], dtype=x.dtype)
        points = torch.stack([(w.sum(-2) * r).sum(-1), (w.sum(-1) * r).sum(-1)], -1)[:, None]
        heat = torch.zeros(x.shape[0], 1, x.shape[-2] // 4, x.shape[-1] // 4)
        return module.targets(heat, x, points, torch.ones(x.shape[0], 1))[0]

    module.head_forward = head_forward
    return module


def blob_images(xs: list[float], y: float = 100.3, size: int = 256) -> torch.Tensor:
    grid = torch.arange(size, dtype=torch.float64)
    x = torch.tensor(xs, dtype=torch.float64)[:, None, None]
    blob = torch.exp(-((grid[None, None] - x) ** 2 + (grid[None, :, None] - y) ** 2) / 18)
    return blob[:, None].expand(-1, 3, -1, -1).float()


def test_flip_test_bias_of_an_ideal_model():
    images = blob_images(XS)
    # The recipe (MSRA targets, shift_heatmap, quarter decoding) reproduces mmpose point by point: +0.25 px on average
    pred = ideal_landmarker("msra", "quarter", shift=True).keypoints(images)[0][:, 0]
    assert pred[:, 0].tolist() == pytest.approx(MMPOSE_FLIP_X, abs=1e-4)
    assert pred[:, 1].tolist() == pytest.approx([100.0] * 40)
    assert (pred[:, 0] - torch.tensor(XS)).mean().item() == pytest.approx(0.24975, abs=1e-4)
    # Without the shift the mirrored maps sit (s - 1) / s = 0.75 cells left: -2.3 px on average
    unshifted = ideal_landmarker("msra", "quarter", shift=False).keypoints(images)[0][:, 0]
    assert (unshifted[:, 0] - torch.tensor(XS)).mean().item() == pytest.approx(-2.30025, abs=1e-4)
    # Our convention flips exactly: no shift needed and no bias (Taylor decoding of sub-pixel targets)
    exact = ideal_landmarker("unbiased", "taylor", shift=False).keypoints(images)[0][:, 0]
    assert (exact[:, 0] - torch.tensor(XS)).abs().max().item() < 2e-3
    assert (exact[:, 1] - 100.3).abs().max().item() < 2e-3


# --- losses -------------------------------------------------------------------------------------------
def test_auxiliary_losses_enter_the_training_loss_with_their_weight():
    torch.manual_seed(0)
    head = functools.partial(BiSeNetV1Head, dropout=0.0)
    module = SegmentationModule(SMALL, head, 5, SGD, aux_weight=0.4, loss_average="all")
    x, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32))
    labels[:, :4] = 255
    outputs = module._upsampled(module.head_forward(x), x)
    assert len(outputs) == 3
    ce = [F.cross_entropy(o, labels, ignore_index=255, reduction="sum").item() / labels.numel() for o in outputs]
    loss = module.training_step((x, labels), 0).item()
    assert loss == pytest.approx(ce[0] + 0.4 * (ce[1] + ce[2]), rel=1e-5)
    assert ce[1] > 0.1 and ce[2] > 0.1  # the auxiliary terms are not negligible here, so dropping them shows


def test_cross_entropy_averages_over_all_pixels_or_the_labelled_ones():
    logits = torch.zeros(1, 4, 4, 4)  # uniform over 4 classes: ln 4 per labelled pixel
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :3] = 255  # 12 of 16 pixels ignored
    every = SegmentationModule(SMALL, functools.partial(FCNHead, head_channels=8), 4, SGD, loss_average="all")
    valid = SegmentationModule(SMALL, functools.partial(FCNHead, head_channels=8), 4, SGD, loss_average="valid")
    assert every._loss(logits, labels).item() == pytest.approx(math.log(4) * 4 / 16)  # mmseg 0.30
    assert valid._loss(logits, labels).item() == pytest.approx(math.log(4))
