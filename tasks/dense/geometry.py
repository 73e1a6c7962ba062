"""Keypoint and label-map geometry shared by the dense tasks.

Convention: a keypoint (x, y) is in pixels with pixel centres at integers, so an image of
width W spans [-0.5, W - 0.5]. Normalised coordinates follow `F.affine_grid` with
align_corners=False (u = (2x + 1) / W - 1), the convention of `tasks.data.RandomAffine`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def to_normalized(points: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Pixel coordinates (..., 2) of an image of `size` (H, W) to [-1, 1] coordinates."""
    scale = points.new_tensor([size[1], size[0]])
    return (2 * points + 1) / scale - 1


def to_pixels(coords: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Inverse of `to_normalized`."""
    scale = coords.new_tensor([size[1], size[0]])
    return ((coords + 1) * scale - 1) / 2


def transform_keypoints(
    points: torch.Tensor, theta: torch.Tensor, in_size: Sequence[int], out_size: Sequence[int] | None = None
) -> torch.Tensor:
    """Where keypoints (N, K, 2) of an `in_size` image land in the `out_size` image that
    `grid_sample(affine_grid(theta))` makes of it. `theta` (N, 2, 3) maps output to input
    coordinates, so the points move by its inverse."""
    out_size = in_size if out_size is None else out_size
    linear, shift = theta[:, :, :2].to(points.dtype), theta[:, :, 2].to(points.dtype)
    moved = torch.linalg.solve(linear, (to_normalized(points, in_size) - shift[:, None]).transpose(1, 2))
    return to_pixels(moved.transpose(1, 2), out_size)


def is_flipped(theta: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the warp mirrors the image (negative determinant)."""
    return torch.linalg.det(theta[:, :, :2].double()) < 0


def swap_on_flip(values: torch.Tensor, flipped: torch.Tensor, flip_index: torch.Tensor) -> torch.Tensor:
    """Renumber per-keypoint values (N, K, ...) of mirrored samples: after a flip, keypoint k
    (say the left eye) is what keypoint flip_index[k] (the right eye) was."""
    mask = flipped.view(-1, *([1] * (values.dim() - 1)))
    return torch.where(mask, values[:, flip_index], values)


def warp_labels(
    labels: torch.Tensor, theta: torch.Tensor, warp: Callable[..., torch.Tensor], fill: int
) -> torch.Tensor:
    """Warp integer label maps (N, H, W) with `warp(x, theta, mode=...)` (nearest: labels are
    never blended); pixels brought in from outside the map get `fill`."""
    shifted = (labels.long() + 1).unsqueeze(1).float()  # 0 now marks "outside"
    moved = warp(shifted, theta, mode="nearest").squeeze(1).round().long() - 1
    return torch.where(moved < 0, torch.full_like(moved, fill), moved)


def swap_labels(labels: torch.Tensor, flipped: torch.Tensor, pairs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Exchange left/right classes (e.g. left eye <-> right eye) in mirrored label maps."""
    if not pairs:
        return labels
    table = torch.arange(256, device=labels.device)
    for a, b in pairs:
        table[a], table[b] = b, a
    return torch.where(flipped.view(-1, 1, 1), table[labels], labels)


def square_crop_theta(center: Sequence[float], side: float, in_size: Sequence[int]) -> torch.Tensor:
    """(1, 2, 3) theta that crops the square of `side` pixels centred at `center` (x, y) out of
    an `in_size` (H, W) image, whatever the output resolution (top-down crops)."""
    h, w = in_size
    cx, cy = center
    rows = [[side / w, 0.0, (2 * cx + 1) / w - 1], [0.0, side / h, (2 * cy + 1) / h - 1]]
    return torch.tensor([rows], dtype=torch.float32)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central `size` x `size` window of (..., H, W)."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]
