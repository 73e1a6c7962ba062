"""Golden values of the KF losses, worked out by hand (numbers in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from kf.losses import cosine_matrix, infomax_loss, infomin_loss, kd_loss, label_smooth_ce
from tasks.errors import UserError

# a = rows e1, e2; b = rows (1, 0), (1, 1): cosine matrix S = [[1, 1/sqrt2], [0, 1/sqrt2]].
A = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
B = torch.tensor([[1.0, 0.0], [1.0, 1.0]])


def test_cosine_matrix_by_hand():
    s = 1 / math.sqrt(2)
    assert torch.allclose(cosine_matrix(A, B), torch.tensor([[1.0, s], [0.0, s]]), atol=1e-7)


def test_infomax_original_normalisation():
    # E_j = (1 + 1/sqrt2) / B^2 = 0.4267767; E_m = (e^{1/sqrt2} + e^0 + 1 + 1) / 4 (the masked
    # diagonal adds exp(0) = 1 twice) = 1.2570287; loss = -(E_j - log E_m) = -0.1980259.
    assert infomax_loss(A, B, "original").item() == pytest.approx(-0.1980258976828032, abs=1e-6)


def test_infomax_standard_normalisation():
    # E_j = (1 + 1/sqrt2) / B = 0.8535534; E_m = mean over i != j of exp(S_ij) = (e^{1/sqrt2} + e^0) / 2.
    assert infomax_loss(A, B, "standard").item() == pytest.approx(-0.43876026349596925, abs=1e-6)


def test_infomax_is_scale_invariant_and_rewards_alignment():
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    assert infomax_loss(x, 3 * x).item() == pytest.approx(infomax_loss(x, x).item(), abs=1e-6)
    assert infomax_loss(x, x, "standard") < infomax_loss(x, torch.randn(16, 8), "standard")


def test_infomax_rejects_unknown_variant_and_tiny_batch():
    with pytest.raises(UserError, match="variant"):
        infomax_loss(A, B, "nce")
    with pytest.raises(UserError, match="at least 2"):
        infomax_loss(A[:1], B[:1], "standard")


def test_kd_loss_golden():
    # KL([.5, .5] || softmax([0, 1] / T)) * T^2: T = 1 -> 0.1201145, T = 2 -> 4 * 0.0309298 = 0.1237192.
    logits, probs = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]])
    assert kd_loss(logits, probs, 1.0).item() == pytest.approx(0.12011450695827758, abs=1e-6)
    assert kd_loss(logits, probs, 2.0).item() == pytest.approx(0.12371921448064555, abs=1e-6)
    assert kd_loss(torch.tensor([[3.0, -1.0]]), torch.tensor([[0.9, 0.1]]), 10.0).item() == pytest.approx(22.79322790085045, rel=1e-5)


def test_kd_loss_is_batch_mean():
    logits, probs = torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    assert kd_loss(logits, probs, 1.0).item() == pytest.approx(0.12011450695827758, abs=1e-6)


def test_label_smoothing_classy_vision_and_standard():
    # logits (2, 0, 0), target 0: log p = (2 - log(e^2 + 2), -log(e^2 + 2), ...).
    # classy_vision: eps = 0.1 / 1.1, target (1 - eps + eps/3, eps/3, eps/3) -> 0.3607569.
    logits, target = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])
    assert label_smooth_ce(logits, target, 0.1, classy_vision=True).item() == pytest.approx(0.3607568874340058, abs=1e-6)
    assert label_smooth_ce(logits, target, 0.1, classy_vision=False).item() == pytest.approx(0.3728780995552179, abs=1e-6)


def test_infomin_batch_gaussian_kl():
    # h rows (1, 0), (3, 2): mu = (2, 1), unbiased var = (2, 2);
    # KL per dim = -1/2 (1 + ln 2 - mu^2 - 2) = (2.1534265, 0.6534265), mean 1.4034264.
    h = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    assert infomin_loss(h).item() == pytest.approx(1.4034264097200273, abs=1e-6)


def test_infomin_is_zero_for_a_standard_normal_batch_moment():
    h = torch.tensor([[-1.0], [1.0]])  # mean 0, unbiased variance 2 -> not zero ...
    assert infomin_loss(h).item() == pytest.approx(-0.5 * (1 + math.log(2) - 2), abs=1e-6)
    h = torch.tensor([[-1.0], [1.0]]) / math.sqrt(2)  # ... mean 0, variance 1 -> KL 0
    assert infomin_loss(h).item() == pytest.approx(0.0, abs=1e-6)
