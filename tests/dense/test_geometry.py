"""Keypoints and label maps move exactly as the image does under the augmentation warp."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tasks.data import RandomAffine
from tasks.dense.geometry import (
    is_flipped,
    square_crop_theta,
    swap_labels,
    swap_on_flip,
    to_normalized,
    to_pixels,
    transform_keypoints,
    warp_labels,
)


def blob_image(points: torch.Tensor, size: int, sigma: float = 1.2) -> torch.Tensor:
    """(N, K, size, size): one smooth blob per keypoint, centred on it."""
    ys = torch.arange(size).view(1, 1, size, 1).float()
    xs = torch.arange(size).view(1, 1, 1, size).float()
    px, py = points[..., 0, None, None], points[..., 1, None, None]
    return torch.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma**2))


def centroid(maps: torch.Tensor) -> torch.Tensor:
    size = maps.shape[-1]
    w = maps.clamp(min=0)
    w = w / w.sum((-1, -2), keepdim=True)
    r = torch.arange(size).float()
    return torch.stack([(w.sum(-2) * r).sum(-1), (w.sum(-1) * r).sum(-1)], -1)


def test_normalised_coordinates_follow_affine_grid():
    assert to_normalized(torch.tensor([[-0.5, 31.5]]), (32, 32)).tolist() == [[-1.0, 1.0]]
    p = torch.tensor([[3.25, 17.5]])
    assert torch.allclose(to_pixels(to_normalized(p, (20, 40)), (20, 40)), p)


def test_keypoints_follow_the_warped_image():
    augment = RandomAffine(degrees=30, translate_px=4, scale=(0.8, 1.2), hflip=True)
    g = torch.Generator().manual_seed(0)
    points = 20 + torch.rand(16, 3, 2, generator=g) * 24  # well inside a 64 x 64 image
    theta = augment.sample_theta(16, 64, g, torch.device("cpu"))
    warped = augment.warp(blob_image(points, 64), theta)
    moved = transform_keypoints(points, theta, (64, 64))
    assert (centroid(warped) - moved).abs().max().item() < 0.1
    assert is_flipped(theta).any() and not is_flipped(theta).all()


def test_flip_renumbers_keypoints_of_flipped_samples_only():
    values = torch.arange(6.0).view(2, 3)
    flipped = torch.tensor([True, False])
    out = swap_on_flip(values, flipped, torch.tensor([2, 1, 0]))
    assert out.tolist() == [[2.0, 1.0, 0.0], [3.0, 4.0, 5.0]]


def test_label_warp_is_nearest_and_fills_outside():
    labels = torch.tensor([[[0, 1, 2, 255]] * 4])  # one 4x4 map, columns 0, 1, 2, ignore
    shift = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])  # one column to the right in input space
    out = warp_labels(labels, shift, RandomAffine().warp, fill=7)
    assert out[0, 0].tolist() == [1, 2, 255, 7]  # values are never blended; the new column is `fill`
    mirror = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert warp_labels(labels, mirror, RandomAffine().warp, fill=7)[0, 0].tolist() == [255, 2, 1, 0]


def test_left_right_classes_swap_in_flipped_maps():
    labels = torch.tensor([[[4, 5, 1]], [[4, 5, 1]]])
    out = swap_labels(labels, torch.tensor([True, False]), [(4, 5)])
    assert out.tolist() == [[[5, 4, 1]], [[4, 5, 1]]]


def test_square_crop_maps_points_into_the_crop():
    image_size, crop = (48, 80), 32
    points = torch.tensor([[[30.0, 20.0], [45.5, 31.0], [38.0, 26.0]]])
    centre, side = (38.0, 26.0), 24.0
    theta = square_crop_theta(centre, side, image_size)
    maps = blob_image(points, 80)[..., :48, :]  # (1, 3, 48, 80)
    grid = F.affine_grid(theta, [1, 3, crop, crop], align_corners=False)
    cropped = F.grid_sample(maps, grid, align_corners=False)
    mapped = transform_keypoints(points, theta, image_size, (crop, crop))
    # The box centre lands on the crop centre, distances scale by crop / side.
    assert torch.allclose(mapped[0, 2], torch.tensor([15.5, 15.5]))
    distance = (points[0, 0] - points[0, 2]).norm().item()
    assert math.isclose((mapped[0, 0] - mapped[0, 2]).norm().item(), distance * crop / side, rel_tol=1e-5)
    assert (centroid(cropped) - mapped).abs().max().item() < 0.1
