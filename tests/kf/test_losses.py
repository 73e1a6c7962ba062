"""Golden values of the KF losses, worked out by hand (numbers in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from kf.losses import (
    cosine_matrix,
    group_logits,
    infomax_loss,
    infomin_loss,
    kd_target,
    label_smooth_ce,
    mse_logit_loss,
    vib_infomin_loss,
)
from kf.task_spec import one_vs_rest
from tasks.distill.losses import kd_loss
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


# B = 3: a = rows (1, 0), (0, 1), (1, 1); b = rows (1, 0), (1, 1), (0, 1); with r = 1/sqrt2,
# S = [[1, r, 0], [0, r, 1], [r, 1, r]]; off-diagonal exp sum = 2 e^r + 2 + 2e = 11.4927937.
A3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
B3 = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def test_infomax_original_normalisation_batch_of_three():
    # E_j = (1 + 2r) / 9 = 0.2682460; E_m = (11.4927937 + 3) / 9 = 1.6103104 (three masked ones);
    # the released InfoMax_loss gives the same 0.2081810 on these inputs (float64, run on the CPU).
    assert infomax_loss(A3, B3, "original").item() == pytest.approx(0.2081810054647611, abs=1e-6)


def test_infomax_standard_normalisation_batch_of_three():
    # E_j = (1 + 2r) / 3 = 0.8047379; E_m = 11.4927937 / 6 = 1.9154656.
    assert infomax_loss(A3, B3, "standard").item() == pytest.approx(-0.15477712612580585, abs=1e-6)


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


def groups_of(spec) -> torch.Tensor:
    """(values, classes) 0/1 matrix of a task, as the teacher match gives it for a 10-class teacher."""
    return spec.group_matrix()


def test_one_vs_rest_kd_target_keeps_the_teachers_decision_at_t10():
    # Teacher logits (10, 0, ..., 0): 99.96 % sure of class 0. Task "class0" = one-vs-rest.
    logits, groups = torch.tensor([[10.0] + [0.0] * 9]), groups_of(one_vs_rest("label", 10)[0])
    # original: softmax at T = 10 then summed: positive = e / (e + 9) = 0.2319693, the target says "rest".
    original = kd_target(logits, groups, 10.0, "original")
    assert original[0, 1].item() == pytest.approx(0.23196931668407395, abs=1e-6)
    # tempered_groups: group logits (ln 9, 10), then / T: positive = sigmoid((10 - ln 9) / 10) = 0.6857399.
    tempered = kd_target(logits, groups, 10.0, "tempered_groups")
    assert tempered[0, 1].item() == pytest.approx(0.6857399275682441, abs=1e-6)
    assert tempered.sum().item() == pytest.approx(1.0, abs=1e-6)
    # T^2 KL(target || softmax(0, 0)) at T = 10 = 100 (p ln 2p + (1 - p) ln 2(1 - p)) = 7.0680266.
    assert kd_loss(torch.zeros(1, 2), tempered, 10.0).item() == pytest.approx(7.068026614017669, rel=1e-5)


def test_grouped_kd_target_at_t2_by_hand():
    # Logits (2, 1, 0, 0), groups {0}, {1, 2}, {3}; T = 2.
    logits = torch.tensor([[2.0, 1.0, 0.0, 0.0]])
    groups = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]])
    # group logits (2, ln(e + 1), 0) / 2 -> softmax = (0.4814044, 0.3414969, 0.1770988)
    assert torch.allclose(group_logits(logits, groups), torch.tensor([[2.0, math.log(math.e + 1), 0.0]]), atol=1e-6)
    expected = torch.tensor([[0.4814043758669042, 0.341496851361692, 0.1770987727714037]])
    assert torch.allclose(kd_target(logits, groups, 2.0, "tempered_groups"), expected, atol=1e-6)
    # original: softmax(logits / 2) summed: (e, e^0.5 + 1, 1) / (e + e^0.5 + 2)
    expected = torch.tensor([[0.4269327006952488, 0.4160075359551683, 0.1570597633495828]])
    assert torch.allclose(kd_target(logits, groups, 2.0, "original"), expected, atol=1e-6)


def test_kd_targets_agree_on_singleton_groups_and_at_t1():
    torch.manual_seed(0)
    logits = torch.randn(6, 10) * 4
    identity = torch.eye(10)
    plain = torch.softmax(logits / 10.0, 1)
    assert torch.allclose(kd_target(logits, identity, 10.0, "tempered_groups"), plain, atol=1e-6)
    assert torch.allclose(kd_target(logits, identity, 10.0, "original"), plain, atol=1e-6)
    groups = groups_of(one_vs_rest("label", 10)[3])
    at_one = [kd_target(logits, groups, 1.0, mode) for mode in ("tempered_groups", "original")]
    assert torch.allclose(*at_one, atol=1e-6)


def test_tempered_groups_never_flip_the_teachers_group_decision():
    torch.manual_seed(1)
    logits = torch.randn(512, 10) * 6
    groups = groups_of(one_vs_rest("label", 10)[0])
    decision = (torch.softmax(logits, 1) @ groups).argmax(1)
    for t in (2.0, 10.0, 50.0):
        assert torch.equal(kd_target(logits, groups, t, "tempered_groups").argmax(1), decision)
    flipped = (kd_target(logits, groups, 10.0, "original").argmax(1) != decision).sum()
    assert flipped == (decision == 1).sum() > 0  # the original sends every positive of this teacher to "rest"


def test_kd_target_rejects_an_unknown_mode():
    with pytest.raises(UserError, match="tempered_groups"):
        kd_target(torch.zeros(1, 2), torch.eye(2), 2.0, "sum")


def test_mse_logit_kd_golden():
    # ((1 - 0)^2 + (2 - 4)^2) / 2 = 2.5 (F.mse_loss over every entry, as the original's Logits loss).
    assert mse_logit_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])).item() == pytest.approx(2.5)
    # teacher (0, ln 3, 0) over groups {0}, {1, 2}: group logits (0, ln 4).
    teacher = group_logits(torch.tensor([[0.0, math.log(3.0), 0.0]]), torch.tensor([[1.0, 0], [0, 1], [0, 1]]))
    assert torch.allclose(teacher, torch.tensor([[0.0, math.log(4.0)]]), atol=1e-6)


def test_vib_infomin_per_sample_kl():
    # row 1: mu (1, 0), log var (0, ln 2): KL = 0.5 + 0.5 (1 - ln 2) = 0.6534264; row 2: N(0, I) -> 0.
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    log_var = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    assert vib_infomin_loss(mu, log_var).item() == pytest.approx(0.32671320486001365, abs=1e-6)


def test_label_smoothing_classy_vision_and_standard():
    # logits (2, 0, 0), target 0: log p = (2 - log(e^2 + 2), -log(e^2 + 2), ...).
    # classy_vision: eps = 0.1 / 1.1, target (1 - eps + eps/3, eps/3, eps/3) -> 0.3607569.
    logits, target = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])
    assert label_smooth_ce(logits, target, 0.1, classy_vision=True).item() == pytest.approx(
        0.3607568874340058, abs=1e-6
    )
    assert label_smooth_ce(logits, target, 0.1, classy_vision=False).item() == pytest.approx(
        0.3728780995552179, abs=1e-6
    )


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
