"""Heatmap training targets in both coordinate conventions of `tasks.dense.heatmap`:
"unbiased" (exact sub-pixel Gaussians over the whole map, ours) and "msra" (mmpose's
TopDownGenerateTarget with encoding="MSRA", the RepFusion WFLW recipe's)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tasks.dense.heatmap import ENCODINGS, encode_heatmaps
from tasks.errors import UserError


def encode_msra(
    points: torch.Tensor, visible: torch.Tensor, size: Sequence[int], stride: float, sigma: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """mmpose's MSRA targets for keypoints (N, K, 2) in input pixels on an (H, W) grid.

    The centre is the cell mu = trunc(x / stride + 0.5) (Python's int(), so it rounds towards
    zero below 0); the Gaussian (peak 1) is cut to the (2 * 3 sigma + 1)-cell square around
    it. The weight is the visibility, set to 0 only where that whole square is off the map,
    so a point just outside the map keeps weight 1 and a partial Gaussian."""
    h, w = size
    radius = sigma * 3
    mu = torch.trunc(points.float() / stride + 0.5)
    ul, br = torch.trunc(mu - radius), torch.trunc(mu + radius + 1)
    window = 2 * radius + 1
    centre = ul + window // 2  # cell of the window's middle (mu itself for sigma = 2)
    length = math.ceil(window)  # np.arange(0, window) elements
    off = (ul[..., 0] >= w) | (ul[..., 1] >= h) | (br[..., 0] < 0) | (br[..., 1] < 0)
    weight = ((visible > 0) & ~off).float()
    xs = torch.arange(w, device=points.device, dtype=torch.float32).view(1, 1, 1, w)
    ys = torch.arange(h, device=points.device, dtype=torch.float32).view(1, 1, h, 1)

    def inside(cells: torch.Tensor, axis: int) -> torch.Tensor:
        lo, hi = ul[..., axis, None, None], br[..., axis, None, None]
        return (cells >= lo) & (cells < hi) & (cells - lo < length)

    cx, cy = centre[..., 0, None, None], centre[..., 1, None, None]
    heat = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    heat = heat * (inside(xs, 0) & inside(ys, 1))
    return heat * (weight > 0.5)[..., None, None], weight


def encode_targets(
    points: torch.Tensor,
    visible: torch.Tensor,
    size: Sequence[int],
    stride: float,
    sigma: float = 2.0,
    encoding: str = "unbiased",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets (N, K, H, W) and weights (N, K) in the named convention."""
    if encoding == "msra":
        return encode_msra(points, visible, size, stride, sigma)
    if encoding == "unbiased":
        return encode_heatmaps(points, visible, size, stride, sigma)
    raise UserError(f"Unknown target encoding '{encoding}'. Choose one of {list(ENCODINGS)}.")
