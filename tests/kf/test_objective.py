"""The KF training objective as wired in KFModule.step_losses: InfoMax reaches z when
feature_dim > 0, the grouped KD target, the MSE-logit KD and the Gaussian TSN with its VIB
InfoMin (the original's dSprites variant)."""

from __future__ import annotations

import functools

import pytest
import torch

from kf.assemble import assemble
from kf.losses import group_logits, kd_target, mse_logit_loss, vib_infomin_loss
from kf.module import KFModule
from tasks.distill.losses import kd_loss
from tasks.errors import UserError
from tests.kf.conftest import TINY_NET

X = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
Y = torch.arange(8) % 10
TWO_TASKS = [{"name": "digit"}, {"name": "high", "groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]}]


def module(teacher: str, **extra) -> KFModule:
    torch.manual_seed(0)
    return KFModule(
        teacher={"source": teacher},
        ckn=TINY_NET,
        tsn=TINY_NET,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        **{"tasks": "one_vs_rest", **extra},
    )


def infomax_grad(m: KFModule) -> torch.Tensor | None:
    m.train()
    m.zero_grad()
    m.step_losses(X, Y)["infomax"].backward()
    return m.factors.ckn.get_classifier().weight.grad


def test_infomax_trains_the_map_to_z_when_feature_dim_is_set(digits_teacher):
    # z = fc(pooled CKN); the stages InfoMax pairs stop before fc, so without the z pair fc gets no InfoMax gradient.
    tied = module(digits_teacher, feature_dim=10)
    assert tied.z_projection[-1].out_features == 10
    grad = infomax_grad(tied)
    assert grad is not None and grad.abs().sum() > 0
    untied = module(digits_teacher, feature_dim=10, infomax_on_z=False)
    assert untied.z_projection is None and infomax_grad(untied) is None
    assert module(digits_teacher).z_projection is None  # feature_dim = 0: z is the last pooled stage already


def kd_term(m: KFModule) -> float:
    m.train()
    with torch.no_grad():
        return float(m.step_losses(X, Y)["kd"])


def test_kd_term_uses_the_chosen_target(digits_teacher):
    tempered, original = module(digits_teacher), module(digits_teacher, kd_target="original")
    with torch.no_grad():
        _, teacher = tempered.reader(X)
        tempered.train()
        logits = tempered.factors.logits(tempered.factors.common(X)[0], tempered.factors.specific(X))
    expected = {
        mode: sum(
            float(kd_loss(lg, kd_target(teacher[0], spec.group_matrix(), 10.0, mode), 10.0))
            for lg, spec in zip(logits, tempered.specs)
        )
        for mode in ("tempered_groups", "original")
    }
    assert kd_term(tempered) == pytest.approx(expected["tempered_groups"], rel=1e-5)
    assert kd_term(original) == pytest.approx(expected["original"], rel=1e-5)
    assert expected["tempered_groups"] != pytest.approx(expected["original"], rel=1e-3)
    # A task the teacher predicts directly (its 10 classes): the two targets are the same.
    full = [{"name": "digit"}]
    as_original = kd_term(module(digits_teacher, tasks=full, kd_target="original"))
    assert kd_term(module(digits_teacher, tasks=full)) == pytest.approx(as_original, rel=1e-6)


def test_mse_logit_kd_reads_the_teachers_group_logits(digits_teacher):
    m = module(digits_teacher, kd_loss="mse", tasks=TWO_TASKS)
    with torch.no_grad():
        _, teacher = m.reader(X)
        m.train()
        logits = m.factors.logits(m.factors.common(X)[0], m.factors.specific(X))
    high = group_logits(teacher[0], m.specs[1].group_matrix())
    expected = float(mse_logit_loss(logits[0], teacher[0]) + mse_logit_loss(logits[1], high))
    assert kd_term(m) == pytest.approx(expected, rel=1e-5)


def test_gaussian_tsn_samples_in_training_and_uses_mu_when_assembled(digits_teacher):
    m = module(digits_teacher, gaussian_tsn=True, tasks=TWO_TASKS)
    tsn = m.factors.tsns[0]
    assert tsn.fc.out_features == 2 * m.factors.dim
    m.train()
    stats = m.factors.specific(X, stats=True)
    h1, mu, log_var = m.factors.sample(stats)
    h2, _, _ = m.factors.sample(stats)
    assert not torch.allclose(h1, h2) and torch.allclose(h1, mu, atol=10 * float(torch.exp(0.5 * log_var).max()))
    torch.manual_seed(3)
    terms = m.step_losses(X, Y)
    torch.manual_seed(3)
    h, mu, log_var = m.factors.sample(m.factors.specific(X, stats=True))
    expected = sum(vib_infomin_loss(a, b) for a, b in zip(mu, log_var))
    assert float(terms["infomin"]) == pytest.approx(float(expected), rel=1e-5)
    m.eval()
    with torch.no_grad():
        mu = m.factors.specific(X, stats=True)[..., : m.factors.dim]
        assert torch.equal(m.factors.sample(m.factors.specific(X, stats=True))[0], mu)
        net = assemble(m.factors, m.specs)
        z = m.factors.ckn(X)
        for k, out in enumerate(net(X)):
            assert torch.allclose(out, m.factors.heads[k](z + mu[k]), atol=1e-5)


def test_unknown_kd_choices_are_user_errors(digits_teacher):
    with pytest.raises(UserError, match="model.kd_target"):
        module(digits_teacher, kd_target="summed")
    with pytest.raises(UserError, match="model.kd_loss"):
        module(digits_teacher, kd_loss="l1")
