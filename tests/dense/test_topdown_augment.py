"""mmpose's top-down augmentation as one warp from a context crop: exact geometry, and the
distributions of TopDownGetRandomScaleRotation / TopDownRandomFlip."""

from __future__ import annotations

import math

import torch

from tasks.dense.geometry import is_flipped, transform_keypoints
from tasks.dense.topdown_augment import TopDownScaleRotation
from tests.dense.test_geometry import blob_image, centroid


def draws(augment: TopDownScaleRotation, n: int = 20000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(angle in degrees, scale, flipped) of n sampled warps."""
    theta = augment.sample_theta(n, 96, torch.Generator().manual_seed(0), torch.device("cpu")).double()
    linear = theta[:, :, :2] * augment.context  # scale * R(angle) * diag(flip, 1)
    scale = linear.det().abs().sqrt()
    angle = torch.atan2(-linear[:, 0, 1], linear[:, 1, 1]) * 180 / math.pi
    return angle, scale, is_flipped(theta)


def test_identity_draw_keeps_the_centre_on_pixel_s_over_2():
    still = TopDownScaleRotation(rot_prob=0.0, scale_factor=0.0, flip_prob=0.0, context=2.0)
    theta = still.sample_theta(1, 96, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.allclose(theta, torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]]))
    point = torch.tensor([[[48 + 5.5, 48 - 3.0]]])  # 5.5 px right of and 3 px above the context centre
    assert torch.allclose(transform_keypoints(point, theta, (96, 96), (48, 48)), torch.tensor([[[24 + 5.5, 24 - 3.0]]]))
    flip = TopDownScaleRotation(rot_prob=0.0, scale_factor=0.0, flip_prob=1.0, context=2.0)
    mirrored = flip.sample_theta(1, 96, torch.Generator().manual_seed(0), torch.device("cpu"))
    # mmpose mirrors the original image, so the crop mirrors about x = S / 2: 29.5 -> 48 - 29.5
    assert torch.allclose(transform_keypoints(point, mirrored, (96, 96), (48, 48)), torch.tensor([[[18.5, 21.0]]]))


def test_keypoints_follow_the_warped_context_crop():
    augment = TopDownScaleRotation()
    g = torch.Generator().manual_seed(1)
    points = 34 + torch.rand(16, 3, 2, generator=g) * 28  # near the centre of a 96-pixel context crop
    theta = augment.sample_theta(16, 96, g, torch.device("cpu"))
    warped = augment.warp(blob_image(points, 96), theta)
    assert warped.shape == (16, 3, 48, 48)
    moved = transform_keypoints(points, theta, (96, 96), (48, 48))
    assert (centroid(warped) - moved).abs().max().item() < 0.1


def test_rotation_scale_and_flip_follow_mmposes_distributions():
    angle, scale, flipped = draws(TopDownScaleRotation())
    still = angle == 0
    # rotation with probability 0.6 (sd of the fraction: 0.0035), N(0, 30) clipped to +-60 degrees
    assert abs(still.double().mean().item() - 0.4) < 0.015
    assert angle.abs().max().item() <= 60 + 1e-4 and (angle.abs() > 59.99).double().mean().item() > 0.01
    # sd of a normal clipped at 2 sd: 30 * 0.9594 = 28.78 degrees; of one clipped at 1 sd: 0.25 * 0.7184 = 0.1796
    assert abs(angle[~still].std().item() - 28.78) < 0.8
    assert abs(scale.std().item() - 0.1796) < 0.004 and abs(scale.mean().item() - 1.0) < 0.005
    # the clip puts P(N > 1) = 0.1587 of the draws exactly on each bound
    assert abs(((scale - 1.25).abs() < 1e-5).double().mean().item() - 0.1587) < 0.01
    assert abs(flipped.double().mean().item() - 0.5) < 0.015
