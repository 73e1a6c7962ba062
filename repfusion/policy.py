"""Which timestep each image gets in stage 1, and the probe that scores it.

Modes:
  rl          a small CNN gives a softmax over the T timesteps (or over `num_bins` equal
              ranges of them); one t is sampled per image; the reward is minus the
              cross-entropy of the probe on the pooled teacher feature at that t; REINFORCE
              with an entropy bonus that decays linearly to 0 by `entropy_end_epoch`
              (the original's EntropyDecayHook), optionally with a running-mean baseline.
  uniform     t ~ U{0 .. max_t-1}
  fixed       one t for every image
  curriculum  t ~ U{0 .. max_t(epoch)-1}, max_t shrinking linearly (the original's TimeDecayHook)

The probe (a 3-layer MLP on the pooled teacher feature) trains in every mode: it is the
only place where labels enter stage 1, and its accuracy is a validation signal."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from tasks.errors import UserError

MODES = ("rl", "uniform", "fixed", "curriculum")
BASELINES = ("none", "mean")


class PolicyNet(nn.Module):
    """The original's LeNet-style policy (for 32x32 inputs; other sizes are pooled to 5x5)."""

    def __init__(self, num_actions: int, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(5), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_actions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def probe_mlp(channels: int, num_classes: int, hidden: int | None = None, normalize: bool = False) -> nn.Sequential:
    """Linear(C, H) -> ReLU -> Linear(H, H) -> ReLU -> Linear(H, classes); H defaults to C.
    `normalize`: standardise the input per channel first (BatchNorm1d without affine), for
    teachers whose pooled features vary little between images."""
    hidden = hidden or channels
    layers = [nn.BatchNorm1d(channels, eps=1e-6, affine=False)] if normalize else []
    return nn.Sequential(*layers, nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


@dataclass
class TimestepDraw:
    t: torch.Tensor                      # (B,) int64 timesteps
    log_prob: torch.Tensor | None = None  # (B,) float32, rl only
    entropy: torch.Tensor | None = None   # (B,) float32 entropy over actions, rl only


class TimestepPolicy(nn.Module):
    def __init__(
        self,
        feature_channels: int,
        num_classes: int,
        mode: str = "rl",
        num_timesteps: int = 1000,
        num_bins: int | None = None,
        max_t: int | None = None,
        fixed_t: int = 0,
        curriculum_start: int | None = None,
        curriculum_end: int = 50,
        curriculum_epochs: int = 100,
        entropy_reg: float = 0.1,
        entropy_end_epoch: int = 100,
        baseline: str = "none",
        baseline_momentum: float = 0.9,
        probe_hidden: int | None = None,
        probe_norm: bool = False,
        in_channels: int = 3,
    ):
        super().__init__()
        if mode not in MODES:
            raise UserError(f"timesteps.mode={mode!r} is not one of {list(MODES)}.")
        if baseline not in BASELINES:
            raise UserError(f"timesteps.baseline={baseline!r} is not one of {list(BASELINES)}.")
        self.mode, self.num_timesteps = mode, num_timesteps
        self.max_t = num_timesteps if max_t is None else max_t
        for name, value, low, high in (("max_t", self.max_t, 1, num_timesteps), ("fixed_t", fixed_t, 0, num_timesteps - 1),
                                       ("curriculum_end", curriculum_end, 1, num_timesteps)):
            if not low <= value <= high:
                raise UserError(f"timesteps.{name}={value} is outside [{low}, {high}] (the teacher has T={num_timesteps}).")
        if num_bins is not None and not 2 <= num_bins <= num_timesteps:
            raise UserError(f"timesteps.num_bins={num_bins} must be in [2, {num_timesteps}] (or null: one action per t).")
        self.fixed_t = fixed_t
        self.curriculum = (curriculum_start or num_timesteps, curriculum_end, curriculum_epochs)
        self.entropy_reg, self.entropy_end_epoch = entropy_reg, entropy_end_epoch
        self.baseline, self.baseline_momentum = baseline, baseline_momentum
        self.num_actions = num_bins or num_timesteps
        # Bin edges: action a covers t in [edges[a], edges[a+1]).
        self.register_buffer("edges", torch.linspace(0, num_timesteps, self.num_actions + 1).round().long(), persistent=False)
        self.net = PolicyNet(self.num_actions, in_channels) if mode == "rl" else None
        self.probe = probe_mlp(feature_channels, num_classes, probe_hidden, probe_norm)
        self.register_buffer("baseline_value", torch.zeros(()))
        self.register_buffer("baseline_ready", torch.zeros((), dtype=torch.bool))
        self.epoch = 0

    # --- schedules ---------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def entropy_coef(self) -> float:
        """entropy_reg * (1 - epoch / entropy_end_epoch), 0 from that epoch on."""
        return self.entropy_reg * max(0.0, 1.0 - self.epoch / max(1, self.entropy_end_epoch))

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
        """One t per image of the (normalised) batch x."""
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

    # --- probe, reward, REINFORCE ------------------------------------------------------
    def losses(self, draw: TimestepDraw, teacher_feature: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Probe cross-entropy on the pooled teacher feature (trains the probe only: the
        feature carries no gradient) and, in rl mode, REINFORCE with reward = -CE and the
        entropy bonus. Float32 throughout."""
        pooled = teacher_feature.float().mean(dim=(2, 3)).detach()
        logits = self.probe(pooled).float()
        ce = F.cross_entropy(logits, labels, reduction="none")
        out = {"loss_probe": ce.mean(), "probe_acc": (logits.argmax(1) == labels).float().mean()}
        if draw.log_prob is None:
            return out
        reward = -ce.detach()
        advantage = reward
        if self.baseline == "mean":
            advantage = reward - (self.baseline_value if bool(self.baseline_ready) else reward.mean())
            if self.training:
                batch_mean = reward.mean()
                value = torch.where(self.baseline_ready, self.baseline_momentum * self.baseline_value
                                    + (1 - self.baseline_momentum) * batch_mean, batch_mean)
                self.baseline_value.copy_(value)
                self.baseline_ready.fill_(True)
        out["loss_policy"] = -(draw.log_prob * advantage).mean()
        out["loss_entropy"] = -self.entropy_coef * draw.entropy.mean()
        out["reward"] = reward.mean()
        return out
