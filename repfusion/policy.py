"""Which timestep each image gets in stage 1, and the probe that scores it.

Modes:
  rl          a small CNN gives a softmax over the T timesteps (or over `num_bins` equal
              ranges of them); one t is sampled per image; the reward is minus the
              cross-entropy of the probe on the pooled teacher feature at that t; REINFORCE
              with an advantage baseline and an entropy bonus that decays linearly to 0
  uniform     t ~ U{0 .. max_t-1}
  fixed       one t for every image
  curriculum  t ~ U{0 .. max_t(epoch)-1}, max_t shrinking linearly (the original's TimeDecayHook)

Baselines (the advantage is reward - baseline): `mean` (a running mean of the reward, the
default), `batch` (the batch's rewards standardised), `none` (the original: the reward
itself, always negative, so the gradient noise scales with it). The entropy bonus decays
over optimiser steps (`entropy_schedule: steps`, the default) or over epochs (`epochs`, the
original's EntropyDecayHook). The policy's input is the image in [-1, 1] (`input_range:
unit`, as the original fed its LeNet) or the data's normalisation (`normalized`).

The rl reward (`reward`):
  off_policy  the default: the probe trains on the teacher feature at a *uniformly* drawn t of
              each labelled image, beside the policy's draw, and the policy's t is scored by
              that probe in eval mode. The probe's training never depends on the policy, so it
              is as good (or as bad) at every t, and a t earns its reward by its feature alone.
  on_policy   the original's loop: the probe trains on the feature at the policy's own t and
              scores it. The probe gets good at the t the policy draws most, which then earn
              the best reward: the policy is rewarded for staying where it is.

The probe (a 3-layer MLP on the pooled teacher feature, repfusion.probe) trains in every
mode: it is the only place where labels enter stage 1, and its accuracy is a validation
signal. A label of -1 marks an unlabelled image (a few-label pool): it reaches neither the
probe nor the reward. `probe: false` drops the probe, for label-free stage 1 (fixed,
uniform or curriculum t)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from repfusion.probe import RunningStandardize, probe_mlp
from tasks.config.types import AtLeastOne, Choices, Count, Probability
from tasks.data.labels import UNLABELLED
from tasks.errors import UserError

MODES = ("rl", "uniform", "fixed", "curriculum")
BASELINES = ("none", "mean", "batch")
ENTROPY_SCHEDULES = ("steps", "epochs")
INPUT_RANGES = ("unit", "normalized")
REWARDS = ("off_policy", "on_policy")


class PolicyNet(nn.Module):
    """The original's LeNet-style policy (for 32x32 inputs; other sizes are pooled to 5x5)."""

    def __init__(self, num_actions: int, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(5),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_actions)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class TimestepDraw:
    t: torch.Tensor  # (B,) int64 timesteps
    log_prob: torch.Tensor | None = None  # (B,) float32, rl only
    entropy: torch.Tensor | None = None  # (B,) float32 entropy over actions, rl only


class TimestepPolicy(nn.Module):
    def __init__(
        self,
        feature_channels: int,
        num_classes: int,
        mode: Annotated[str, Choices("repfusion.policy.MODES")] = "rl",
        num_timesteps: AtLeastOne = 1000,
        num_bins: AtLeastOne | None = None,
        max_t: int | None = None,
        fixed_t: int = 0,
        fixed_t_from: str | None = None,
        curriculum_start: int | None = None,
        curriculum_end: int = 50,
        curriculum_epochs: Count = 100,
        entropy_reg: float = 0.1,
        entropy_schedule: Annotated[str, Choices("repfusion.policy.ENTROPY_SCHEDULES")] = "steps",
        entropy_end_step: int = 39_100,
        entropy_end_epoch: int = 100,
        baseline: Annotated[str, Choices("repfusion.policy.BASELINES")] = "mean",
        baseline_momentum: Probability = 0.9,
        probe: bool = True,
        probe_hidden: int | None = None,
        probe_norm: Annotated[str, Choices("repfusion.probe.PROBE_NORMS")] = "none",
        probe_norm_momentum: Probability = 0.05,
        input_range: Annotated[str, Choices("repfusion.policy.INPUT_RANGES")] = "unit",
        in_channels: AtLeastOne = 3,
        reward: Annotated[str, Choices("repfusion.policy.REWARDS")] = "off_policy",
    ):
        """`fixed_t_from`: an oracle run dir (python -m repfusion.oracle) whose best fixed t
        replaces `fixed_t`. `entropy_end_step` (39,100: the original CIFAR run's 100 epochs x 391 steps) or
        `entropy_end_epoch`, by `entropy_schedule`. `probe: false` is label-free stage 1 (no
        probe, no labels), which rl cannot be: its reward is the probe's."""
        super().__init__()
        for name, value, options in (
            ("mode", mode, MODES),
            ("baseline", baseline, BASELINES),
            ("entropy_schedule", entropy_schedule, ENTROPY_SCHEDULES),
            ("input_range", input_range, INPUT_RANGES),
            ("reward", reward, REWARDS),
        ):
            if value not in options:
                raise UserError(f"timesteps.{name}={value!r} is not one of {list(options)}.")
        if mode == "rl" and not probe:
            raise UserError(
                "timesteps.probe=false (label-free stage 1) needs mode fixed, uniform or curriculum: "
                "the rl policy's reward is the probe's cross-entropy, which needs labels."
            )
        if fixed_t_from is not None:
            if mode != "fixed":
                raise UserError(f"timesteps.fixed_t_from is set, but mode={mode!r}: it gives the t of mode fixed.")
            from repfusion.oracle import best_timestep  # the oracle's summary, read once here

            fixed_t = best_timestep(fixed_t_from)
        self.mode, self.num_timesteps = mode, num_timesteps
        self.max_t = num_timesteps if max_t is None else max_t
        for name, value, low, high in (
            ("max_t", self.max_t, 1, num_timesteps),
            ("fixed_t", fixed_t, 0, num_timesteps - 1),
            ("curriculum_end", curriculum_end, 1, num_timesteps),
        ):
            if not low <= value <= high:
                raise UserError(
                    f"timesteps.{name}={value} is outside [{low}, {high}] (the teacher has T={num_timesteps})."
                )
        if num_bins is not None and not 2 <= num_bins <= num_timesteps:
            raise UserError(
                f"timesteps.num_bins={num_bins} must be in [2, {num_timesteps}] (or null: one action per t)."
            )
        self.fixed_t = fixed_t
        self.curriculum = (curriculum_start or num_timesteps, curriculum_end, curriculum_epochs)
        self.entropy_reg, self.entropy_schedule = entropy_reg, entropy_schedule
        self.entropy_end_step, self.entropy_end_epoch = entropy_end_step, entropy_end_epoch
        self.baseline, self.baseline_momentum = baseline, baseline_momentum
        self.input_range, self.reward = input_range, reward
        self.num_actions = num_bins or num_timesteps
        # Bin edges: action a covers t in [edges[a], edges[a+1]).
        edges = torch.linspace(0, num_timesteps, self.num_actions + 1).round().long()
        self.register_buffer("edges", edges, persistent=False)
        self.net = PolicyNet(self.num_actions, in_channels) if mode == "rl" else None
        self.probe = (
            probe_mlp(feature_channels, num_classes, probe_hidden, probe_norm, probe_norm_momentum) if probe else None
        )
        self.register_buffer("baseline_value", torch.zeros(()))
        self.register_buffer("baseline_ready", torch.zeros((), dtype=torch.bool))
        self.epoch = self.step = 0

    # --- schedules ---------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_step(self, step: int) -> None:
        self.step = step

    @property
    def entropy_coef(self) -> float:
        """entropy_reg * (1 - progress / end), 0 from the end on; progress in optimiser steps
        or epochs."""
        if self.entropy_schedule == "steps":
            progress, end = self.step, self.entropy_end_step
        else:
            progress, end = self.epoch, self.entropy_end_epoch
        return self.entropy_reg * max(0.0, 1.0 - progress / max(1, end))

    @property
    def current_max_t(self) -> int:
        if self.mode != "curriculum":
            return self.max_t
        start, end, epochs = self.curriculum
        return int(round(start + (end - start) * min(1.0, self.epoch / max(1, epochs))))

    def sampling_entropy(self) -> float:
        """Entropy (nats) of the t distribution of the non-learned modes."""
        return 0.0 if self.mode == "fixed" else math.log(self.current_max_t)

    def t_entropy(self, draw: TimestepDraw) -> torch.Tensor | float:
        """Mean entropy (nats) of the distribution of t itself, comparable to ln T in every
        mode: with bins, t is uniform inside its bin, which adds ln(bin width)."""
        if draw.entropy is None:
            return self.sampling_entropy()
        return draw.entropy.mean() + math.log(self.num_timesteps / self.num_actions)

    # --- drawing t ---------------------------------------------------------------------
    def draw(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TimestepDraw:
        """One t per image of the batch x (in the policy's input range, see `input_range`)."""
        n, device = x.shape[0], x.device
        if self.mode == "fixed":
            return TimestepDraw(torch.full((n,), self.fixed_t, dtype=torch.long, device=device))
        if self.mode != "rl":
            return TimestepDraw(torch.randint(0, self.current_max_t, (n,), generator=generator, device=device))
        log_probs = F.log_softmax(self.net(x).float(), dim=1)
        action = torch.multinomial(log_probs.exp().detach(), 1, generator=generator).squeeze(1)
        low, high = self.edges[action], self.edges[action + 1]
        offset = (torch.rand(n, generator=generator, device=device) * (high - low)).long()
        entropy = -(log_probs.exp() * log_probs).sum(1)
        return TimestepDraw(low + offset, log_probs.gather(1, action[:, None]).squeeze(1), entropy)

    def action_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, actions) policy probabilities (rl only)."""
        return F.softmax(self.net(x).float(), dim=1)

    @property
    def off_policy(self) -> bool:
        """Whether the probe trains on uniformly drawn t (rl with the off-policy reward)."""
        return self.mode == "rl" and self.reward == "off_policy" and self.probe is not None

    def draw_probe_timesteps(self, n: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) t ~ U{0 .. T-1} for the off-policy probe's training features."""
        return torch.randint(0, self.num_timesteps, (n,), generator=generator, device=device)

    # --- probe, reward, REINFORCE ------------------------------------------------------
    def probe_ce(self, teacher_feature: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample cross-entropy and logits of the probe on the pooled teacher feature
        (float32; the feature carries no gradient, so only the probe trains on it)."""
        pooled = teacher_feature.float().mean(dim=(2, 3)).detach()
        logits = self.probe(pooled).float()
        return F.cross_entropy(logits, labels, reduction="none"), logits

    @torch.no_grad()
    def score(self, teacher_feature: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample cross-entropy of the probe in eval mode: scoring moves neither its weights
        nor its input statistics."""
        was_training = self.probe.training
        self.probe.eval()
        try:
            return self.probe_ce(teacher_feature, labels)[0]
        finally:
            self.probe.train(was_training)

    def advantage(self, reward: torch.Tensor) -> torch.Tensor:
        """reward - baseline. `mean`: a running mean of the batch-mean reward, taken before
        this batch moves it (the first batch is centred on its own mean); `batch`: the batch's
        rewards standardised; `none`: the reward itself (the original)."""
        if self.baseline == "none":
            return reward
        if self.baseline == "batch":
            return (reward - reward.mean()) / (reward.std(correction=0) + 1e-8)
        advantage = reward - (self.baseline_value if bool(self.baseline_ready) else reward.mean())
        if self.training:
            batch_mean = reward.mean()
            value = torch.where(
                self.baseline_ready,
                self.baseline_momentum * self.baseline_value + (1 - self.baseline_momentum) * batch_mean,
                batch_mean,
            )
            self.baseline_value.copy_(value)
            self.baseline_ready.fill_(True)
        return advantage

    def losses(
        self,
        draw: TimestepDraw,
        teacher_feature: torch.Tensor,
        labels: torch.Tensor | None,
        probe_feature: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The probe's cross-entropy and, in rl mode, REINFORCE with reward = -CE and the
        entropy bonus; only the labelled images (label >= 0) count. `probe_feature`: the
        teacher feature of the labelled images at `draw_probe_timesteps` t, which the
        off-policy probe trains on in training (in evaluation it scores the policy's t). Nothing
        without a probe (label-free stage 1)."""
        if self.probe is None:
            return {}
        if labels is None:
            raise UserError(
                "This batch has no labels, but stage 1 trains a probe on them. For label-free stage 1 set "
                "model.timesteps.probe=false with model.timesteps.mode=fixed|uniform|curriculum."
            )
        labelled = labels != UNLABELLED
        if not bool(labelled.any()):  # a batch of unlabelled images: nothing to score
            zero = teacher_feature.new_zeros((), dtype=torch.float32)
            if draw.log_prob is None:
                return {"loss_probe": zero}
            return {"loss_probe": zero, "loss_policy": zero, "loss_entropy": -self.entropy_coef * draw.entropy.mean()}
        teacher_feature, labels = teacher_feature[labelled], labels[labelled]
        norm = self.probe[0] if isinstance(self.probe[0], RunningStandardize) else None
        warm_up = norm is not None and self.training and not bool(norm.ready)
        if self.off_policy and self.training:
            if probe_feature is None or probe_feature.shape[0] != labels.shape[0]:
                raise ValueError("The off-policy probe needs the labelled images' features at uniformly drawn t.")
            ce, logits = self.probe_ce(probe_feature, labels)  # trains the probe, fair to every t
            reward = -self.score(teacher_feature, labels)
        else:
            ce, logits = self.probe_ce(teacher_feature, labels)
            reward = -ce.detach()
        out = {"loss_probe": ce.mean(), "probe_acc": (logits.argmax(1) == labels).float().mean()}
        if draw.log_prob is None:
            return out
        # During the warm-up batch the probe's statistics come from that batch: no policy update.
        advantage = torch.zeros_like(reward) if warm_up else self.advantage(reward)
        out["loss_policy"] = -(draw.log_prob[labelled] * advantage).mean()
        out["loss_entropy"] = -self.entropy_coef * draw.entropy.mean()
        out["reward"] = reward.mean()
        return out
