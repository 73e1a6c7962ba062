"""Heatmap targets and decoding: golden values, encode -> decode round trips, flips."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.dense.heatmap import (
    decode_heatmaps,
    encode_heatmaps,
    flip_heatmaps,
    heatmap_to_pixels,
    pixels_to_heatmap,
    soft_argmax,
    weighted_heatmap_mse,
)
from tasks.errors import UserError


def random_points(n: int, k: int, image: int, seed: int = 0) -> torch.Tensor:
    """Sub-pixel points anywhere on an image of `image` pixels (its span is [-0.5, image - 0.5])."""
    return torch.rand(n, k, 2, generator=torch.Generator().manual_seed(seed)) * image - 0.5


def test_coordinate_maps_are_inverse_and_unbiased():
    # Stride 4: input pixels 0..3 form heatmap cell 0, whose centre is input 1.5.
    assert pixels_to_heatmap(torch.tensor(1.5), 4).item() == 0.0
    assert pixels_to_heatmap(torch.tensor(-0.5), 4).item() == -0.5
    assert heatmap_to_pixels(torch.tensor(2.0), 4).item() == 9.5
    p = random_points(3, 5, 64)
    assert torch.allclose(heatmap_to_pixels(pixels_to_heatmap(p, 4), 4), p, atol=1e-5)


def test_encode_golden_values():
    points = torch.tensor([[[3.0, 2.0], [100.0, 2.0], [1.0, 1.0]]])  # stride 1; the second is outside
    heat, weight = encode_heatmaps(points, torch.tensor([[1.0, 1.0, 0.0]]), (8, 8), stride=1, sigma=2.0)
    assert heat.shape == (1, 3, 8, 8)
    assert weight.tolist() == [[1.0, 0.0, 0.0]]  # outside and invisible points weigh nothing
    assert heat[0, 0, 2, 3].item() == 1.0
    assert heat[0, 0, 2, 4].item() == pytest.approx(math.exp(-1 / 8))  # one cell right
    assert heat[0, 0, 4, 5].item() == pytest.approx(math.exp(-(4 + 4) / 8))  # (2, 2) away
    assert heat[0, 1].abs().sum().item() == 0 and heat[0, 2].abs().sum().item() == 0


@pytest.mark.parametrize("stride,size", [(1, 64), (2, 32), (4, 16)])
def test_taylor_round_trip_within_half_pixel(stride, size):
    points = random_points(400, 5, size * stride, seed=stride)
    heat, weight = encode_heatmaps(points, torch.ones(400, 5), (size, size), stride)
    assert weight.all()
    decoded, scores = decode_heatmaps(heat, stride, "taylor")
    error = (decoded - points).abs()
    assert error.max().item() < 0.5
    assert error.max().item() < 1e-3 * stride  # a Gaussian's log is quadratic: one Newton step is exact
    assert scores.min().item() > 0.9


@pytest.mark.parametrize("stride,size", [(1, 64), (4, 16)])
def test_quarter_and_plain_argmax_bounds(stride, size):
    points = random_points(400, 5, size * stride, seed=10 + stride)
    heat, _ = encode_heatmaps(points, torch.ones(400, 5), (size, size), stride)
    cells = pixels_to_heatmap(points, stride)
    inner = ((cells > 0.5) & (cells < size - 1.5)).all(-1)  # argmax not on the border
    quarter = (pixels_to_heatmap(decode_heatmaps(heat, stride, "quarter_per_axis")[0], stride) - cells).abs()
    plain = (pixels_to_heatmap(decode_heatmaps(heat, stride, "none")[0], stride) - cells).abs()
    assert plain.max().item() <= 0.5 + 1e-5
    assert quarter[inner].max().item() <= 0.25 + 1e-5
    assert quarter[inner].mean().item() < plain[inner].mean().item()
    if stride == 1:
        assert quarter.max().item() < 0.5 + 1e-5  # within half a pixel everywhere


def test_soft_argmax_round_trip_away_from_the_border():
    points = random_points(300, 4, 64, seed=3)
    heat, _ = encode_heatmaps(points, torch.ones(300, 4), (16, 16), stride=4)
    cells = pixels_to_heatmap(points, 4)
    inner = ((cells > 3) & (cells < 12)).all(-1)
    decoded, _ = soft_argmax(heat, 4, beta=10.0, window=3)
    assert (decoded - points).abs()[inner].max().item() < 0.5
    # The whole-map softmax is pulled towards the centre by the flat background.
    global_error = (soft_argmax(heat, 4, beta=5.0, window=None)[0] - points).abs()[inner].max().item()
    assert global_error > 1.0


def test_soft_argmax_is_differentiable():
    heat = torch.rand(1, 2, 8, 8, requires_grad=True)
    soft_argmax(heat, 1)[0].sum().backward()
    assert heat.grad is not None and heat.grad.abs().sum() > 0


def test_flipped_image_heatmaps_flip_back_exactly():
    points = random_points(10, 3, 64, seed=5)
    flip_index = torch.tensor([2, 1, 0])
    mirrored = points.clone()
    mirrored[..., 0] = 63 - points[..., 0]  # x -> W - 1 - x
    mirrored = mirrored[:, flip_index]  # left becomes right
    ones = torch.ones(10, 3)
    original, _ = encode_heatmaps(points, ones, (16, 16), 4)
    flipped, _ = encode_heatmaps(mirrored, ones, (16, 16), 4)
    assert torch.allclose(flip_heatmaps(flipped, flip_index), original, atol=1e-6)


def test_weighted_mse_golden_value():
    pred = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    weight = torch.tensor([[1.0, 0.5]])
    # ((1-0)^2 + (2-0)^2 + (0.5*3)^2 + (0.5*4)^2) / 4 = (1 + 4 + 2.25 + 4) / 4
    assert weighted_heatmap_mse(pred, target, weight).item() == pytest.approx(11.25 / 4)


def test_unknown_refinement_is_a_user_error():
    with pytest.raises(UserError, match="taylor"):
        decode_heatmaps(torch.zeros(1, 1, 4, 4), 1, "cubic")
