"""Golden values of the generic distillation losses, KD on logits and the feature losses
(numbers worked out by hand or by independent loops over pairs and triples), and their
float32 guarantee."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tasks.distill.losses import ATLoss, DenseLoss, HintLoss, RKDLoss, kd_loss
from tasks.errors import UserError


def test_hint_golden_value():
    loss = HintLoss(student_channels=2, teacher_channels=1)
    with torch.no_grad():
        loss.adapter.weight.copy_(torch.tensor([[[[1.0]], [[2.0]]]]))
        loss.adapter.bias.fill_(0.5)
    f_s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 2.0]]]])  # pooled: 2.5, 0.5
    f_t = torch.tensor([[[[1.0, 1.0], [1.0, 5.0]]]])  # pooled: 2.0
    # adapter on pooled: 1 * 2.5 + 2 * 0.5 + 0.5 = 4.0; (4 - 2)^2 = 4
    assert loss(f_s, f_t).item() == pytest.approx(4.0)
    assert HintLoss(2, 1, weight=0.5).adapter is not None


def test_hint_standardize_golden_value():
    loss = HintLoss(student_channels=1, teacher_channels=1, standardize=True)
    with torch.no_grad():
        loss.adapter.weight.fill_(1.0)
        loss.adapter.bias.zero_()
    f_s = torch.tensor([0.5, 2.0]).view(2, 1, 1, 1)
    f_t = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1) * torch.ones(2, 1, 2, 2)  # pooled 1, 3: standardised -1, +1
    # ((0.5 + 1)^2 + (2 - 1)^2) / 2 = (2.25 + 1) / 2
    assert loss(f_s, f_t).item() == pytest.approx(1.625, rel=1e-5)
    shifted = f_t * 0.01 + 5.0  # a common offset and a small spread standardise to the same target
    assert loss(f_s, shifted).item() == pytest.approx(1.625, rel=1e-4)


def test_hint_equals_conv_then_pool():
    torch.manual_seed(0)
    loss = HintLoss(student_channels=8, teacher_channels=4)
    f_s, f_t = torch.randn(3, 8, 5, 5), torch.randn(3, 4, 2, 2)
    reference = F.mse_loss(F.adaptive_avg_pool2d(loss.adapter(f_s), 1).flatten(1), f_t.mean(dim=(2, 3)))
    assert torch.allclose(loss(f_s, f_t), reference, atol=1e-6)


def test_attention_transfer_golden_value():
    f_s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    f_t = torch.ones(1, 3, 2, 2)
    # student map [1, 4, 9, 16] / sqrt(354); teacher map [3]*4 / 6 = 0.5 each
    assert ATLoss(1, 3)(f_s, f_t).item() == pytest.approx(101.37944, rel=1e-5)
    assert ATLoss(1, 3, weight=1.0)(f_s, f_t).item() == pytest.approx(0.10137944, rel=1e-5)


def test_attention_transfer_resizes_the_student_map_bilinearly():
    torch.manual_seed(1)
    f_s, f_t = torch.randn(2, 4, 2, 2), torch.randn(2, 6, 4, 4)
    at = ATLoss(4, 6, weight=1.0)
    resized = F.interpolate(f_s, size=(4, 4), mode="bilinear", align_corners=False)
    assert at(f_s, f_t).item() == pytest.approx(at(resized, f_t).item(), rel=1e-6)
    assert ATLoss.spatial and DenseLoss.spatial and not HintLoss.spatial and not RKDLoss.spatial


def test_rkd_golden_value():
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])[:, :, None, None]
    t = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0]])[:, :, None, None]
    # independent loops over pairs and triples: distance term 0.110869, angle term 0.021696
    rkd = RKDLoss(2, 2)
    assert RKDLoss(2, 2, distance_weight=1.0, angle_weight=0.0)(s, t).item() == pytest.approx(0.11086917, rel=1e-5)
    assert RKDLoss(2, 2, distance_weight=0.0, angle_weight=1.0)(s, t).item() == pytest.approx(0.02169579, rel=1e-5)
    assert rkd(s, t).item() == pytest.approx(3.85651883, rel=1e-5)


def test_rkd_is_invariant_to_scale_and_translation():
    torch.manual_seed(2)
    t = torch.randn(6, 5, 3, 3)
    s = 4.0 * t + 1.5  # same relations, other scale and offset
    assert RKDLoss(5, 5)(s, t).item() == pytest.approx(0.0, abs=1e-5)


def test_dense_golden_values():
    f_s = torch.tensor([[[[2.0]]]])
    f_t = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mse, l1 = DenseLoss(1, 1), DenseLoss(1, 1, weight=10.0, kind="l1")
    for loss in (mse, l1):
        with torch.no_grad():
            loss.adapter.weight.fill_(1.5)
            loss.adapter.bias.zero_()
    # adapter gives 3 everywhere after resizing: MSE (4 + 1 + 0 + 1) / 4, L1 (2 + 1 + 0 + 1) / 4 * 10
    assert mse(f_s, f_t).item() == pytest.approx(1.5)
    assert l1(f_s, f_t).item() == pytest.approx(10.0)
    with pytest.raises(UserError, match="mse"):
        DenseLoss(1, 1, kind="huber")


@pytest.mark.parametrize("loss_cls", [HintLoss, ATLoss, RKDLoss, DenseLoss])
def test_losses_are_float32_under_bf16_autocast(loss_cls):
    torch.manual_seed(3)
    loss = loss_cls(8, 4)
    f_s, f_t = torch.randn(4, 8, 4, 4).bfloat16(), torch.randn(4, 4, 2, 2).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(f_s, f_t)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(loss(f_s.float(), f_t.float()).item(), rel=1e-6)


@pytest.mark.parametrize(
    "make", [lambda: ATLoss(4, 3), lambda: RKDLoss(4, 3), lambda: DenseLoss(4, 3)], ids=["at", "rkd", "dense"]
)
def test_standardize_makes_every_loss_blind_to_a_per_channel_affine_teacher(make):
    torch.manual_seed(0)
    plain = make()
    standardized = make()
    standardized.load_state_dict(plain.state_dict())
    standardized.standardize = True
    f_s, f_t = torch.randn(6, 4, 3, 3), torch.randn(6, 3, 3, 3)
    scale, offset = torch.tensor([0.01, 3.0, 0.5]).view(1, 3, 1, 1), torch.tensor([5.0, -2.0, 0.3]).view(1, 3, 1, 1)
    moved = f_t * scale + offset
    # equal up to the 1e-6 eps
    assert standardized(f_s, moved).item() == pytest.approx(standardized(f_s, f_t).item(), rel=1e-3)
    assert plain(f_s, moved).item() != pytest.approx(plain(f_s, f_t).item(), rel=1e-2)


def test_kd_loss_golden():
    # KL([.5, .5] || softmax([0, 1] / T)) * T^2: T = 1 -> 0.1201145, T = 2 -> 4 * 0.0309298 = 0.1237192.
    logits, probs = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]])
    assert kd_loss(logits, probs, 1.0).item() == pytest.approx(0.12011450695827758, abs=1e-6)
    assert kd_loss(logits, probs, 2.0).item() == pytest.approx(0.12371921448064555, abs=1e-6)
    assert kd_loss(torch.tensor([[3.0, -1.0]]), torch.tensor([[0.9, 0.1]]), 10.0).item() == pytest.approx(
        22.79322790085045, rel=1e-5
    )


def test_kd_loss_is_batch_mean():
    logits, probs = torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    assert kd_loss(logits, probs, 1.0).item() == pytest.approx(0.12011450695827758, abs=1e-6)
