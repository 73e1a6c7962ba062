"""ModelEMA: the one exponential moving average of a model's parameters, kept as a frozen copy
inside the LightningModule (so it is saved in checkpoints and a resume continues it exactly):
RepFusion's stage-1 student (exported as the backbone), the DDPM U-Net (samples and is
exported) and a classifier's network with model.ema_decay (validated, tested and exported).
Buffers (BN statistics) are copied, not averaged, as the original's EMAHook."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class ModelEMA(nn.Module):
    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        """`warmup`: use min(decay, (1 + n) / (10 + n)) after n updates, so a short run's
        average is not dominated by the random initialisation (the original had none; it ran
        ~78k steps, where the warm-up no longer matters)."""
        super().__init__()
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup = decay, warmup
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> ModelEMA:
        return super().train(False)  # the average is only ever evaluated

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema <- decay * ema + (1 - decay) * param; buffers copied."""
        torch._foreach_lerp_(
            list(self.model.parameters()), [p.detach() for p in model.parameters()], 1.0 - self.current_decay()
        )
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)
        self.num_updates += 1
