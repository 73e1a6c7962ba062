"""The timestep policy: each mode's draws, the schedules, REINFORCE's loss and that it
learns to prefer the timesteps whose teacher features the probe classifies best."""

from __future__ import annotations

import math

import pytest
import torch

from repfusion.policy import TimestepDraw, TimestepPolicy
from tasks.errors import UserError


def images(n=32, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_rl_starts_near_uniform_over_all_timesteps():
    torch.manual_seed(0)
    policy = TimestepPolicy(feature_channels=16, num_classes=10)
    draw = policy.draw(images(), torch.Generator().manual_seed(1))
    assert policy.num_actions == 1000 and draw.t.dtype == torch.long
    assert draw.t.min() >= 0 and draw.t.max() < 1000
    assert draw.entropy.mean().item() == pytest.approx(math.log(1000), abs=0.05)
    assert draw.log_prob.dtype == torch.float32 and draw.log_prob.requires_grad


def test_uniform_fixed_and_curriculum_draws():
    x, generator = images(256), torch.Generator().manual_seed(0)
    uniform = TimestepPolicy(16, 10, mode="uniform", max_t=50)
    t = uniform.draw(x, generator).t
    assert t.min() >= 0 and t.max() < 50 and len(t.unique()) > 30
    assert uniform.net is None and uniform.sampling_entropy() == pytest.approx(math.log(50))
    fixed = TimestepPolicy(16, 10, mode="fixed", fixed_t=7)
    assert torch.equal(fixed.draw(x).t, torch.full((256,), 7)) and fixed.sampling_entropy() == 0.0
    curriculum = TimestepPolicy(16, 10, mode="curriculum", curriculum_end=50, curriculum_epochs=100)
    for epoch, expected in ((0, 1000), (50, 525), (100, 50), (150, 50)):
        curriculum.set_epoch(epoch)
        assert curriculum.current_max_t == expected
    assert curriculum.draw(x, generator).t.max() < 50


def test_entropy_bonus_decays_linearly_to_zero():
    policy = TimestepPolicy(16, 10, entropy_reg=0.1, entropy_end_epoch=100)
    values = []
    for epoch in (0, 50, 99, 100, 180):
        policy.set_epoch(epoch)
        values.append(policy.entropy_coef)
    assert values == pytest.approx([0.1, 0.05, 0.001, 0.0, 0.0])


def test_bins_map_an_action_to_its_range_of_t():
    policy = TimestepPolicy(16, 10, num_bins=10)
    with torch.no_grad():
        policy.net.head[-1].weight.zero_()
        policy.net.head[-1].bias.fill_(-50.0)
        policy.net.head[-1].bias[3] = 50.0  # always action 3: t in [300, 400)
    draw = policy.draw(images(128))
    assert draw.t.min() >= 300 and draw.t.max() < 400 and len(draw.t.unique()) > 20
    assert draw.log_prob.abs().max() < 1e-6


def test_reinforce_loss_golden_value_and_probe_only_training():
    torch.manual_seed(0)
    policy = TimestepPolicy(4, 3, entropy_reg=0.1, entropy_end_epoch=10)
    policy.set_epoch(5)  # entropy coefficient 0.05
    log_prob = torch.tensor([-1.0, -2.0], requires_grad=True)
    draw = TimestepDraw(torch.tensor([3, 9]), log_prob, torch.tensor([2.0, 4.0]))
    feature = torch.randn(2, 4, 2, 2, requires_grad=True)
    labels = torch.tensor([0, 2])
    out = policy.losses(draw, feature, labels)
    ce = torch.nn.functional.cross_entropy(policy.probe(feature.detach().mean(dim=(2, 3))), labels, reduction="none")
    expected_policy = -((-1.0) * -ce[0] + (-2.0) * -ce[1]) / 2  # -(log_prob * reward).mean(), reward = -CE
    assert out["loss_policy"].item() == pytest.approx(expected_policy.item(), rel=1e-6)
    assert out["loss_entropy"].item() == pytest.approx(-0.05 * 3.0)
    assert out["loss_probe"].item() == pytest.approx(ce.mean().item(), rel=1e-6)
    assert out["reward"].item() == pytest.approx(-ce.mean().item(), rel=1e-6)
    (out["loss_probe"] + out["loss_policy"]).backward()
    assert feature.grad is None  # the teacher feature never carries a gradient


def test_mean_baseline_centres_the_first_batch_and_tracks_rewards():
    torch.manual_seed(0)
    policy = TimestepPolicy(4, 3, baseline="mean", baseline_momentum=0.5)
    log_prob = torch.zeros(4, requires_grad=True)
    draw = TimestepDraw(torch.zeros(4, dtype=torch.long), log_prob, torch.ones(4))
    feature, labels = torch.randn(4, 4, 1, 1), torch.tensor([0, 1, 2, 0])
    out = policy.losses(draw, feature, labels)
    out["loss_policy"].backward()
    assert log_prob.grad.sum().item() == pytest.approx(0.0, abs=1e-6)  # advantages sum to 0
    assert policy.baseline_value.item() == pytest.approx(out["reward"].item(), rel=1e-6)
    first = policy.baseline_value.item()
    out2 = policy.losses(draw, feature, labels)
    assert policy.baseline_value.item() == pytest.approx(0.5 * first + 0.5 * out2["reward"].item(), rel=1e-6)


def test_rl_learns_to_prefer_informative_timesteps():
    """Two bins: the 'teacher' feature carries the label for t < 500 and is noise above.
    REINFORCE (no baseline, as the original) plus the probe must move the policy to t < 500."""
    torch.manual_seed(0)
    policy = TimestepPolicy(8, 4, num_bins=2, entropy_reg=0.0)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for step in range(60):
        x = images(16, seed=step)
        labels = torch.randint(0, 4, (16,), generator=generator)
        draw = policy.draw(x, generator)
        informative = torch.nn.functional.one_hot(labels, 8).float() * 3
        noise = torch.randn(16, 8, generator=generator)
        feature = torch.where((draw.t < 500)[:, None], informative, noise)[:, :, None, None]
        out = policy.losses(draw, feature, labels)
        optimizer.zero_grad()
        (out["loss_probe"] + out["loss_policy"]).backward()
        optimizer.step()
    probs = policy.action_probs(images(64, seed=999)).mean(0)
    assert probs[0] > 0.9


@pytest.mark.parametrize("kwargs,match", [({"mode": "random"}, "mode"), ({"baseline": "ema"}, "baseline"),
                                          ({"fixed_t": 1000}, "fixed_t"), ({"max_t": 0}, "max_t"),
                                          ({"num_bins": 1}, "num_bins")])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(UserError, match=match):
        TimestepPolicy(4, 3, **kwargs)


def test_t_entropy_is_comparable_to_ln_T_in_every_mode():
    torch.manual_seed(0)
    x = images(16)
    binned = TimestepPolicy(16, 10, num_bins=10)
    assert binned.t_entropy(binned.draw(x)).item() == pytest.approx(math.log(1000), abs=0.05)  # ln 10 + ln 100
    assert TimestepPolicy(16, 10, mode="uniform").t_entropy(TimestepDraw(torch.zeros(16))) == pytest.approx(math.log(1000))
    assert TimestepPolicy(16, 10, mode="fixed").t_entropy(TimestepDraw(torch.zeros(16))) == 0.0


def test_probe_norm_standardises_the_pooled_feature():
    torch.manual_seed(0)
    policy = TimestepPolicy(4, 3, mode="uniform", probe_norm=True)
    assert isinstance(policy.probe[0], torch.nn.BatchNorm1d) and not policy.probe[0].affine
    pooled = torch.randn(32, 4) * 0.01 + 0.2
    hidden = policy.probe[0](pooled)
    assert torch.allclose(hidden.mean(0), torch.zeros(4), atol=1e-5) and torch.allclose(hidden.std(0, correction=0), torch.ones(4), atol=0.02)
    assert isinstance(TimestepPolicy(4, 3, mode="uniform").probe[0], torch.nn.Linear)  # the original probe
