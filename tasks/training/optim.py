"""Learning-rate schedules stepped per iteration (so warm-up is smooth), built from config
as `_partial_` callables: `scheduler(optimizer, steps_per_epoch=..., total_steps=...)`, with
the plain linear warm-up or mmcv's (the original dense recipes')."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

from tasks.config.types import Count, NonNegative
from tasks.errors import UserError

WARMUPS = ("plain", "mmcv")


def _with_warmup(
    factor: Callable[[int], float], warmup_steps: int, warmup: str = "plain", warmup_ratio: float = 0.1
) -> Callable[[int], float]:
    """The schedule `factor` after a linear warm-up of `warmup_steps` iterations i.

    plain: (i + 1) / W times the base LR. mmcv (its warm-up hooks, as the original dense recipes
    of mmseg and mmpose ran them): the schedule's own value times 1 - (1 - ratio) * (1 - i / W),
    so it starts at `warmup_ratio` times the scheduled LR."""
    if warmup not in WARMUPS:
        raise UserError(f"Unknown warm-up '{warmup}'. Choose one of {list(WARMUPS)}.")

    def schedule(step: int) -> float:
        if step >= warmup_steps:
            return factor(step)
        if warmup == "plain":
            return (step + 1) / warmup_steps
        return factor(step) * (1 - (1 - warmup_ratio) * (1 - step / warmup_steps))

    return schedule


def multistep(
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    total_steps: int,
    milestones: Sequence[int] = (100, 150),
    gamma: NonNegative = 0.1,
    warmup_epochs: NonNegative | None = 0,
    warmup_steps: Count = 0,
    warmup: str = "plain",
    warmup_ratio: NonNegative = 0.001,
) -> LambdaLR:
    """Multiply the LR by `gamma` at each milestone epoch (the original RepFusion/KF recipes;
    mmcv's StepLrUpdaterHook). The warm-up lasts `warmup_epochs` epochs when that is set (not 0
    or null), otherwise `warmup_steps` iterations."""
    bounds = sorted(int(m * steps_per_epoch) for m in milestones)
    warm = int(warmup_epochs * steps_per_epoch) if warmup_epochs else warmup_steps
    return LambdaLR(
        optimizer,
        _with_warmup(lambda s: gamma ** sum(s >= b for b in bounds), warm, warmup, warmup_ratio),
    )


def cosine(
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    total_steps: int,
    warmup_epochs: NonNegative = 0,
    min_lr_ratio: NonNegative = 0.0,
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
    power: NonNegative = 0.9,
    min_lr_ratio: NonNegative = 0.0,
    warmup_steps: Count = 0,
    warmup: str = "plain",
    warmup_ratio: NonNegative = 0.1,
) -> LambdaLR:
    """Polynomial decay by iteration (segmentation recipes; mmcv's PolyLrUpdaterHook):
    min + (base - min) * (1 - i / T) ** power, after an optional warm-up."""

    def factor(step: int) -> float:
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - min(step, total_steps) / max(1, total_steps)) ** power

    return LambdaLR(optimizer, _with_warmup(factor, warmup_steps, warmup, warmup_ratio))


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
