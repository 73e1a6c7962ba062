"""NME, the landmark metric: point-to-point errors divided by a normalising length, averaged
over the visible points of all images ("points", mmpose's keypoint_nme) or per image first
and then over images ("images"). For faces the length is the inter-ocular distance (WFLW:
outer eye corners, points 60 and 72). The two agree when every point is visible."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from tasks.errors import UserError

NORMALIZERS = ("pair", "bbox_diagonal", "bbox_size", "none")
AVERAGES = ("points", "images")


def normalizing_length(
    target: torch.Tensor, visible: torch.Tensor, kind: str, pair: Sequence[int] | None = None
) -> torch.Tensor:
    """(N,) lengths from the true keypoints (N, K, 2): "pair" = distance between keypoints
    pair[0] and pair[1]; "bbox_diagonal" / "bbox_size" = diagonal / sqrt(area) of the tight
    box around the visible keypoints; "none" = 1 (errors in pixels)."""
    if kind == "pair":
        a, b = pair
        return (target[:, a] - target[:, b]).norm(dim=-1)
    if kind in ("bbox_diagonal", "bbox_size"):
        vis = visible.bool().unsqueeze(-1)
        big = torch.finfo(target.dtype).max
        low = torch.where(vis, target, big).amin(1)
        high = torch.where(vis, target, -big).amax(1)
        extent = (high - low).clamp(min=0)
        return extent.norm(dim=-1) if kind == "bbox_diagonal" else extent.prod(-1).sqrt()
    return torch.ones(target.shape[0], device=target.device, dtype=target.dtype)


def check_nme_options(normalizer: str, pair: Sequence[int] | None, average: str) -> None:
    if normalizer not in NORMALIZERS:
        raise UserError(f"Unknown NME normalizer '{normalizer}'. Choose one of {list(NORMALIZERS)}.")
    if normalizer == "pair" and (pair is None or len(pair) != 2):
        raise UserError(
            "The 'pair' NME normalizer needs two keypoint indices, e.g. [60, 72] for WFLW's outer eye corners."
        )
    if average not in AVERAGES:
        raise UserError(f"Unknown NME average '{average}'. Choose one of {list(AVERAGES)}.")


def image_errors(
    pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor | None, normalizer: str, pair: Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (N,): the sum of normalised errors over visible points, and their number."""
    pred, target = pred.double(), target.double()
    if visible is None:
        visible = torch.ones(target.shape[:2], device=target.device)
    vis = visible.double()
    length = normalizing_length(target, vis, normalizer, pair).clamp(min=1e-6)
    return ((pred - target).norm(dim=-1) * vis).sum(1) / length, vis.sum(1)


def average_errors(sums: torch.Tensor, counts: torch.Tensor, average: str) -> torch.Tensor:
    """NME from per-image error sums and point counts; images without a visible point are left out."""
    keep = counts > 0
    if average == "points":
        return sums[keep].sum() / counts[keep].sum().clamp(min=1)
    return (sums[keep] / counts[keep]).sum() / keep.sum().clamp(min=1)


class NormalizedMeanError(Metric):
    """NME over visible keypoints, averaged over points ("points") or images ("images")."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, normalizer: str = "pair", pair: Sequence[int] | None = None, average: str = "images", **kwargs):
        super().__init__(**kwargs)
        check_nme_options(normalizer, pair, average)
        self.normalizer, self.pair, self.average = normalizer, tuple(pair) if pair is not None else None, average
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor | None = None) -> None:
        sums, counts = image_errors(pred, target, visible, self.normalizer, self.pair)
        keep = counts > 0
        if self.average == "points":
            self.total += sums[keep].sum()
            self.count += counts[keep].sum()
        else:
            self.total += (sums[keep] / counts[keep]).sum()
            self.count += keep.sum()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()
