"""NME, the landmark metric: the mean point-to-point error of an image divided by a
normalising length, averaged over images. For faces the length is the inter-ocular
distance (WFLW: outer eye corners, points 60 and 72)."""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric

from tasks.errors import UserError

NORMALIZERS = ("pair", "bbox_diagonal", "bbox_size", "none")


def normalizing_length(target: torch.Tensor, visible: torch.Tensor, kind: str, pair: Sequence[int] | None = None) -> torch.Tensor:
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


class NormalizedMeanError(Metric):
    """Mean over images of (mean over visible keypoints of ||pred - true||) / length."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, normalizer: str = "pair", pair: Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        if normalizer not in NORMALIZERS:
            raise UserError(f"Unknown NME normalizer '{normalizer}'. Choose one of {list(NORMALIZERS)}.")
        if normalizer == "pair" and (pair is None or len(pair) != 2):
            raise UserError("The 'pair' NME normalizer needs two keypoint indices, e.g. [60, 72] for WFLW's outer eye corners.")
        self.normalizer, self.pair = normalizer, tuple(pair) if pair is not None else None
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor | None = None) -> None:
        pred, target = pred.double(), target.double()
        visible = torch.ones(target.shape[:2], device=target.device) if visible is None else visible
        vis = visible.double()
        errors = (pred - target).norm(dim=-1)
        per_image = (errors * vis).sum(1) / vis.sum(1).clamp(min=1)
        length = normalizing_length(target, visible, self.normalizer, self.pair).clamp(min=1e-6)
        keep = vis.sum(1) > 0
        self.total += (per_image / length)[keep].sum()
        self.count += int(keep.sum())

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()
