"""The probe that scores a timestep: a 3-layer MLP on the pooled teacher feature, and the
standardisation of its input.

The digits teacher's pooled mid-block features vary little between images (per-channel std
0.01-0.04 around ~0.2), so the probe needs its input standardised. How:
  none      the original: no standardisation
  running   per-channel mean and variance from the batches *before* this one (an exponential
            average; the first training batch only initialises it): a sample's output, hence
            its reward, depends on that sample alone
  batch     BatchNorm1d without affine in training mode (this project's first version): a
            sample's reward depends on the other samples' t, which rewards concentrating t"""

from __future__ import annotations

import torch
import torch.nn as nn

from tasks.errors import UserError

PROBE_NORMS = ("none", "running", "batch")


class RunningStandardize(nn.Module):
    """(x - mean) / sqrt(var + eps) per channel with statistics gathered before the current
    batch. `ready` is false until the first training batch has initialised them."""

    def __init__(self, channels: int, momentum: float = 0.05, eps: float = 1e-6):
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise UserError(f"timesteps.probe_norm_momentum={momentum} must be in (0, 1].")
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                batch_mean, batch_var = x.mean(0), x.var(0, unbiased=False)
                if not bool(self.ready):  # warm-up: the first batch only sets the statistics
                    self.mean.copy_(batch_mean)
                    self.var.copy_(batch_var)
                    self.ready.fill_(True)
                mean, var = self.mean.clone(), self.var.clone()
                self.mean.lerp_(batch_mean, self.momentum)
                self.var.lerp_(batch_var, self.momentum)
        else:
            mean, var = self.mean, self.var
        return (x - mean) / torch.sqrt(var + self.eps)


def probe_norm_layer(kind: str, channels: int, momentum: float = 0.05) -> nn.Module | None:
    if kind not in PROBE_NORMS:
        raise UserError(f"timesteps.probe_norm={kind!r} is not one of {list(PROBE_NORMS)}.")
    if kind == "running":
        return RunningStandardize(channels, momentum)
    if kind == "batch":
        return nn.BatchNorm1d(channels, eps=1e-6, affine=False)
    return None


def probe_mlp(
    channels: int, num_classes: int, hidden: int | None = None, norm: str = "none", norm_momentum: float = 0.05
) -> nn.Sequential:
    """[norm ->] Linear(C, H) -> ReLU -> Linear(H, H) -> ReLU -> Linear(H, classes); H defaults to C."""
    hidden = hidden or channels
    layer = probe_norm_layer(norm, channels, norm_momentum)
    return nn.Sequential(
        *([layer] if layer is not None else []),
        nn.Linear(channels, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
