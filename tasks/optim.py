"""Learning-rate schedules stepped per iteration (so warm-up is smooth), built from config
as `_partial_` callables: `scheduler(optimizer, steps_per_epoch=..., total_steps=...)`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR


def _with_warmup(factor: Callable[[int], float], warmup_steps: int) -> Callable[[int], float]:
    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return factor(step)

    return schedule


def multistep(
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    total_steps: int,
    milestones: Sequence[int] = (100, 150),
    gamma: float = 0.1,
    warmup_epochs: float = 0,
) -> LambdaLR:
    """Multiply the LR by `gamma` at each milestone epoch (the original RepFusion/KF recipes)."""
    bounds = sorted(int(m * steps_per_epoch) for m in milestones)
    return LambdaLR(
        optimizer, _with_warmup(lambda s: gamma ** sum(s >= b for b in bounds), int(warmup_epochs * steps_per_epoch))
    )


def cosine(
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    total_steps: int,
    warmup_epochs: float = 0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up, then cosine decay to `min_lr_ratio` times the base LR at the last step."""
    warmup = int(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, _with_warmup(factor, warmup))


def poly(
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    total_steps: int,
    power: float = 0.9,
    min_lr_ratio: float = 0.0,
    warmup_steps: int = 0,
) -> LambdaLR:
    """Polynomial decay (segmentation recipes), with an optional warm-up in iterations."""

    def factor(step: int) -> float:
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - min(step, total_steps) / max(1, total_steps)) ** power

    return LambdaLR(optimizer, _with_warmup(factor, warmup_steps))


def configure_optimizers(module, params, optimizer_factory, scheduler_factory=None) -> dict:
    """The body of `LightningModule.configure_optimizers` shared by every module:
    optimiser over `params`, per-step schedule sized from the trainer."""
    optimizer = optimizer_factory(params)
    if scheduler_factory is None:
        return {"optimizer": optimizer}
    trainer = module.trainer
    total = int(trainer.estimated_stepping_batches)
    epochs = max(1, trainer.max_epochs or 1) if trainer.max_epochs and trainer.max_epochs > 0 else 1
    per_epoch = max(1, total // epochs)
    scheduler = scheduler_factory(optimizer, steps_per_epoch=per_epoch, total_steps=total)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
