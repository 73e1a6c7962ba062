"""NME and mIoU against values computed by hand."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from tasks.dense.heads import FCNHead
from tasks.dense.nme import NormalizedMeanError
from tasks.dense.segmentation import SegmentationModule
from tasks.errors import UserError

# Two faces, three points; the normaliser pair is (0, 1).
TARGET = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [2.0, 3.0]], [[0.0, 0.0], [0.0, 10.0], [5.0, 5.0]]])
PRED = torch.tensor(
    [
        [[0.0, 0.0], [4.0, 3.0], [2.0, 3.0]],  # errors 0, 3, 0 -> mean 1
        [[6.0, 8.0], [0.0, 10.0], [99.0, 99.0]],
    ]
)  # errors 10, 0, (invisible) -> mean 5
VISIBLE = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_nme_pair_normaliser_by_hand():
    metric = NormalizedMeanError("pair", (0, 1))
    metric.update(PRED, TARGET, VISIBLE)
    # image 1: 1 / |p0 - p1| = 1 / 4; image 2: 5 / 10
    assert metric.compute().item() == pytest.approx((0.25 + 0.5) / 2)


def test_nme_accumulates_over_batches_like_one_batch():
    metric = NormalizedMeanError("pair", (0, 1))
    metric.update(PRED[:1], TARGET[:1], VISIBLE[:1])
    metric.update(PRED[1:], TARGET[1:], VISIBLE[1:])
    assert metric.compute().item() == pytest.approx(0.375)


def test_nme_box_normalisers_by_hand():
    diagonal = NormalizedMeanError("bbox_diagonal")
    diagonal.update(PRED, TARGET, VISIBLE)
    # image 1: box 4 x 3 -> diagonal 5 -> 1/5; image 2: visible points span 0 x 10 -> 5/10
    assert diagonal.compute().item() == pytest.approx((0.2 + 0.5) / 2)
    size = NormalizedMeanError("bbox_size")
    size.update(PRED[:1], TARGET[:1], VISIBLE[:1])
    assert size.compute().item() == pytest.approx(1 / math.sqrt(12))
    pixels = NormalizedMeanError("none")
    pixels.update(PRED, TARGET, VISIBLE)
    assert pixels.compute().item() == pytest.approx(3.0)


def test_nme_rejects_bad_normaliser():
    with pytest.raises(UserError, match="pair"):
        NormalizedMeanError("iod")
    with pytest.raises(UserError, match="two keypoint indices"):
        NormalizedMeanError("pair")


def _segmenter(num_classes: int) -> SegmentationModule:
    return SegmentationModule(
        {"name": "resnet18", "small_input_stem": True},
        functools.partial(FCNHead, head_channels=8),
        num_classes,
        functools.partial(torch.optim.SGD, lr=0.1),
    )


def test_miou_by_hand_with_ignore_and_an_absent_class():
    module = _segmenter(num_classes=4)  # class 3 appears in neither truth nor prediction
    target = torch.tensor([[0, 0, 1, 1, 2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1, 2, 0, 2, 2]])
    # Confusion (rows truth, cols prediction) without the ignored pixel:
    #   t0: [1, 1, 0]   t1: [0, 2, 1]   t2: [1, 0, 1]
    # IoU0 = 1 / (2 + 2 - 1) = 1/3, IoU1 = 2 / (3 + 3 - 2) = 1/2, IoU2 = 1 / (2 + 2 - 1) = 1/3
    module.miou["test"](pred, target)
    module.test_iou(pred, target)
    module.pixel_acc["test"](pred, target)
    assert module.miou["test"].compute().item() == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    per_class = module.test_iou.compute()
    assert per_class[:3].tolist() == pytest.approx([1 / 3, 1 / 2, 1 / 3])
    assert torch.isnan(per_class[3])  # absent class: no IoU, not logged
    assert module.pixel_acc["test"].compute().item() == pytest.approx(4 / 7)
