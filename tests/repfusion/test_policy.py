"""The timestep policy: each mode's draws, the schedules, REINFORCE's loss and baselines,
that a sample's reward is its own, that an uninformative reward leaves the policy spread
out, and that it learns to prefer the timesteps whose teacher features the probe
classifies best."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from repfusion.policy import TimestepDraw, TimestepPolicy
from repfusion.probe import RunningStandardize
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


def test_entropy_bonus_decays_linearly_to_zero_over_steps_or_epochs():
    policy = TimestepPolicy(16, 10, entropy_reg=0.1, entropy_end_step=400)
    values = []
    for step in (0, 200, 396, 400, 900):
        policy.set_step(step)
        policy.set_epoch(step)  # the epoch is ignored by the step schedule
        values.append(policy.entropy_coef)
    assert values == pytest.approx([0.1, 0.05, 0.001, 0.0, 0.0])
    by_epoch = TimestepPolicy(16, 10, entropy_reg=0.1, entropy_schedule="epochs", entropy_end_epoch=100)
    values = []
    for epoch in (0, 50, 99, 100, 180):
        by_epoch.set_epoch(epoch)
        by_epoch.set_step(10**6)
        values.append(by_epoch.entropy_coef)
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
    policy = TimestepPolicy(
        4, 3, entropy_reg=0.1, entropy_schedule="epochs", entropy_end_epoch=10, baseline="none", reward="on_policy"
    )
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
    policy = TimestepPolicy(4, 3, baseline="mean", baseline_momentum=0.5, reward="on_policy")
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


def test_batch_baseline_standardises_the_rewards():
    policy = TimestepPolicy(4, 3, baseline="batch")
    reward = torch.tensor([-1.0, -2.0, -3.0, -6.0])
    expected = (reward + 3.0) / math.sqrt((4 + 1 + 0 + 9) / 4)
    assert torch.allclose(policy.advantage(reward), expected, atol=1e-6)
    assert TimestepPolicy(4, 3).baseline == "mean"  # a baseline is on by default


@pytest.fixture
def one_thread():
    """These loops run many tiny ops, where a second thread only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_policy(policy: TimestepPolicy, steps: int, seed: int, feature_of) -> TimestepPolicy:
    """`steps` REINFORCE steps (SGD 0.1, momentum 0.9, as the original) on batches of 32
    random images; `feature_of(t, labels, generator)` plays the teacher."""
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x = images(32, seed=seed * 1000 + step)
        labels = torch.randint(0, policy.probe[-1].out_features, (32,), generator=generator)
        draw = policy.draw(x, generator)
        probe_feature = None
        if policy.off_policy:  # the probe's own features, at uniformly drawn t
            probe_feature = feature_of(policy.draw_probe_timesteps(32, x.device, generator), labels, generator)
            probe_feature = probe_feature[:, :, None, None]
        out = policy.losses(draw, feature_of(draw.t, labels, generator)[:, :, None, None], labels, probe_feature)
        optimizer.zero_grad()
        (out["loss_probe"] + out["loss_policy"] + out["loss_entropy"]).backward()
        optimizer.step()
    return policy


def mean_entropy(policy: TimestepPolicy) -> float:
    probs = policy.action_probs(images(64, seed=999)).clamp_min(1e-12)
    return -(probs * probs.log()).sum(1).mean().item()


def test_uninformative_reward_leaves_the_policy_spread_out(one_thread):
    """Features that say nothing about the label, whatever t: every t is as good as any
    other, so the policy must stay near uniform over 1000 t. Without a baseline (the
    original), the always-negative reward of about -2.3 makes the gradient noise large
    enough that these seeds collapse onto an arbitrary t within 100 steps."""
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        policy = TimestepPolicy(16, 10, entropy_reg=0.0)
        train_policy(policy, 100, seed, lambda t, labels, g: torch.randn(len(t), 16, generator=g))
        assert mean_entropy(policy) > 6.8, seed  # ln 1000 = 6.91


def test_informative_reward_puts_most_mass_on_the_best_range(one_thread):
    """The 'teacher' feature carries the label only for t in [600, 700); everywhere else it
    is noise. With the default baseline the policy must move most of its mass there within
    200 steps; without one (the original) these seeds end with 0.11 and 0.0 there."""
    for seed in (0, 1):
        torch.manual_seed(seed)
        policy = TimestepPolicy(8, 4, entropy_reg=0.1, entropy_end_step=39_100)

        def feature_of(t, labels, g):
            good = ((t >= 600) & (t < 700)).float()[:, None]
            return F.one_hot(labels, 8).float() * 3 * good + torch.randn(len(t), 8, generator=g)

        train_policy(policy, 200, seed, feature_of)
        mass = policy.action_probs(images(64, seed=999)).mean(0)[600:700].sum().item()
        assert mass > 0.8, (seed, mass)


def test_a_samples_reward_does_not_depend_on_the_rest_of_its_batch():
    """The same 32 samples at t = 100, once with the other 32 of the batch also at t = 100
    and once with them at t = 900 (whose features sit elsewhere): with running statistics
    their rewards are identical; BatchNorm in training mode makes them differ."""
    g = torch.Generator().manual_seed(0)
    shift = torch.randn(16, generator=g)

    def features(t):
        return (torch.randn(64, 16, generator=g) * 0.05 + 0.2 + (t[:, None] / 1000) * shift)[:, :, None, None]

    labels = torch.randint(0, 10, (64,), generator=g)
    same, mixed = torch.full((64,), 100), torch.cat([torch.full((32,), 100), torch.full((32,), 900)])
    f_same, f_mixed = features(same), features(mixed)
    f_mixed[:32] = f_same[:32]
    for norm, coupled in (("running", False), ("batch", True)):
        torch.manual_seed(0)
        policy = TimestepPolicy(16, 10, probe_norm=norm)
        policy.probe_ce(features(torch.randint(0, 1000, (64,), generator=g)), labels)  # warm-up batch
        ce_same = copy.deepcopy(policy).probe_ce(f_same, labels)[0][:32]
        ce_mixed = copy.deepcopy(policy).probe_ce(f_mixed, labels)[0][:32]
        assert torch.allclose(ce_same, ce_mixed, atol=1e-6) != coupled, norm


def test_running_standardize_uses_the_statistics_of_earlier_batches():
    norm = RunningStandardize(2, momentum=0.25, eps=0.0)
    first = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # mean (1, 2), var (1, 1)
    second = torch.tensor([[5.0, 2.0], [7.0, 2.0]])  # mean (6, 2), var (1, 0)
    assert torch.allclose(norm(first), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))  # the warm-up batch sets them
    assert bool(norm.ready)
    assert torch.allclose(norm(second), torch.tensor([[4.0, 0.0], [6.0, 0.0]]))  # (x - (1, 2)) / 1: the first's
    assert torch.allclose(norm.mean, torch.tensor([2.25, 2.0])) and torch.allclose(norm.var, torch.tensor([1.0, 0.75]))
    norm.eval()
    assert torch.allclose(norm(second), (second - norm.mean) / norm.var.sqrt())


def test_no_policy_update_on_the_warm_up_batch():
    torch.manual_seed(0)
    policy = TimestepPolicy(4, 3, probe_norm="running", reward="on_policy")
    log_prob = torch.zeros(4, requires_grad=True)
    draw = TimestepDraw(torch.zeros(4, dtype=torch.long), log_prob, torch.ones(4))
    feature, labels = torch.randn(4, 4, 1, 1), torch.tensor([0, 1, 2, 0])
    policy.losses(draw, feature, labels)["loss_policy"].backward()
    assert torch.count_nonzero(log_prob.grad) == 0
    log_prob.grad = None
    policy.losses(draw, torch.randn(4, 4, 1, 1), labels)["loss_policy"].backward()
    assert torch.count_nonzero(log_prob.grad) == 4


def test_label_free_policy_has_no_probe_and_rl_needs_one():
    policy = TimestepPolicy(4, 3, mode="fixed", fixed_t=5, probe=False)
    assert policy.probe is None and policy.losses(policy.draw(images(4)), torch.randn(4, 4, 1, 1), None) == {}
    with pytest.raises(UserError, match="probe=false.*fixed, uniform or curriculum"):
        TimestepPolicy(4, 3, mode="rl", probe=False)
    with pytest.raises(UserError, match="no labels.*probe=false"):
        draw = TimestepDraw(torch.zeros(4, dtype=torch.long))
        TimestepPolicy(4, 3, mode="fixed").losses(draw, torch.randn(4, 4, 1, 1), None)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "random"}, "mode"),
        ({"baseline": "ema"}, "baseline"),
        ({"entropy_schedule": "hours"}, "entropy_schedule"),
        ({"input_range": "0-255"}, "input_range"),
        ({"probe_norm": "layer"}, "probe_norm"),
        ({"fixed_t": 1000}, "fixed_t"),
        ({"max_t": 0}, "max_t"),
        ({"num_bins": 1}, "num_bins"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(UserError, match=match):
        TimestepPolicy(4, 3, **kwargs)


def test_t_entropy_is_comparable_to_ln_T_in_every_mode():
    torch.manual_seed(0)
    x = images(16)
    binned = TimestepPolicy(16, 10, num_bins=10)
    assert binned.t_entropy(binned.draw(x)).item() == pytest.approx(math.log(1000), abs=0.05)  # ln 10 + ln 100
    uniform = TimestepPolicy(16, 10, mode="uniform")
    assert uniform.t_entropy(TimestepDraw(torch.zeros(16))) == pytest.approx(math.log(1000))
    assert TimestepPolicy(16, 10, mode="fixed").t_entropy(TimestepDraw(torch.zeros(16))) == 0.0


def test_batch_probe_norm_standardises_the_pooled_feature():
    torch.manual_seed(0)
    policy = TimestepPolicy(4, 3, mode="uniform", probe_norm="batch")
    assert isinstance(policy.probe[0], torch.nn.BatchNorm1d) and not policy.probe[0].affine
    pooled = torch.randn(32, 4) * 0.01 + 0.2
    hidden = policy.probe[0](pooled)
    assert torch.allclose(hidden.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(hidden.std(0, correction=0), torch.ones(4), atol=0.02)
    assert isinstance(TimestepPolicy(4, 3, mode="uniform").probe[0], torch.nn.Linear)  # the original probe
    assert isinstance(TimestepPolicy(4, 3, mode="uniform", probe_norm="running").probe[0], RunningStandardize)


def planted_feature(t, labels, g):
    """A planted landscape over four ranges of t: the label sits in the range's own block of 4
    channels (features at different t live in different places, as a teacher's do), strongest
    at t < 250 (strength 4), weak elsewhere (1 or 1.5), under unit noise."""
    block = (t * 4 // 1000).clamp(max=3)
    signal = F.one_hot(labels, 4).float() * torch.tensor([4.0, 1.0, 1.0, 1.5])[block][:, None]
    return torch.randn(len(t), 16, generator=g).scatter_add(1, block[:, None] * 4 + torch.arange(4), signal)


@pytest.mark.parametrize("reward,best_range_mass", [("off_policy", "most"), ("on_policy", "none")])
def test_off_policy_reward_finds_the_best_t_where_the_original_loop_stays(one_thread, reward, best_range_mass):
    """The policy starts with 98 % of its mass on t >= 750. The original loop's probe learns
    only the features it is shown there, so the rare draws at t < 250 score badly and the
    policy stays (all three seeds keep < 1 % there after 80 steps). The off-policy probe
    learns every range alike, so t < 250 earns the best reward and the policy moves there."""
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        policy = TimestepPolicy(16, 4, num_bins=4, reward=reward, entropy_reg=0.01, entropy_end_step=400)
        with torch.no_grad():
            policy.net.head[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0]))
        assert policy.action_probs(images(64, seed=999)).mean(0)[3].item() > 0.97
        train_policy(policy, 80, seed, planted_feature)
        low_t_mass = policy.action_probs(images(64, seed=999)).mean(0)[0].item()
        assert (low_t_mass > 0.9) if best_range_mass == "most" else (low_t_mass < 0.01), (seed, low_t_mass)


def test_off_policy_probe_trains_on_the_uniform_draws_and_scores_without_moving():
    """In training the probe's loss is on the uniform-t features; the reward is the eval-mode
    probe's CE at the policy's t, which moves neither its statistics nor its weights."""
    torch.manual_seed(0)
    policy = TimestepPolicy(4, 3, probe_norm="running")
    assert policy.reward == "off_policy" and policy.off_policy  # the default
    draw = TimestepDraw(torch.zeros(4, dtype=torch.long), torch.zeros(4, requires_grad=True), torch.ones(4))
    labels = torch.tensor([0, 1, 2, 0])
    policy.losses(draw, torch.randn(4, 4, 1, 1), labels, torch.randn(4, 4, 1, 1))  # warm-up batch
    uniform_feature, policy_feature = torch.randn(4, 4, 1, 1), torch.randn(4, 4, 1, 1) + 3.0
    before = policy.probe[0].mean.clone()
    out = policy.losses(draw, policy_feature, labels, uniform_feature)
    moved_by_uniform = torch.lerp(before, uniform_feature.mean(dim=(0, 2, 3)), 0.05)
    assert torch.allclose(policy.probe[0].mean, moved_by_uniform)  # only the uniform batch moved them
    policy.eval()
    assert out["reward"].item() == pytest.approx(-policy.probe_ce(policy_feature, labels)[0].mean().item(), rel=1e-5)
    policy.train()
    with pytest.raises(ValueError, match="uniformly drawn t"):
        policy.losses(draw, policy_feature, labels)


def test_unlabelled_images_reach_neither_probe_nor_reward():
    """Label -1 marks an image of the pool whose label is not used: the losses equal those of
    the labelled images alone, and an all-unlabelled batch trains nothing."""
    torch.manual_seed(0)
    policy = TimestepPolicy(4, 3, reward="on_policy", baseline="none")
    log_prob = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)
    draw = TimestepDraw(torch.zeros(4, dtype=torch.long), log_prob, torch.ones(4))
    feature = torch.randn(4, 4, 1, 1)
    out = policy.losses(draw, feature, torch.tensor([0, -1, 2, -1]))
    ce = policy.probe_ce(feature[[0, 2]], torch.tensor([0, 2]))[0]
    assert out["loss_probe"].item() == pytest.approx(ce.mean().item(), rel=1e-6)
    assert out["loss_policy"].item() == pytest.approx(-((-1.0) * -ce[0] + (-3.0) * -ce[1]).item() / 2, rel=1e-6)
    none = policy.losses(draw, feature, torch.full((4,), -1))
    assert none["loss_probe"].item() == 0.0 and none["loss_policy"].item() == 0.0 and "reward" not in none
