"""Learning-rate schedules with mmcv's linear warm-up, as the original dense recipes ran
them (mmseg's poly, mmpose's step), stepped per iteration like `tasks.optim`.

mmcv's warm-up scales the schedule's own value at iteration i < W by
1 - (1 - warmup_ratio) * (1 - i / W): it starts at warmup_ratio times the scheduled LR
(mmcv's default 0.1 for mmseg; 0.001 in mmpose's configs). `warmup="plain"` keeps
`tasks.optim`'s warm-up instead: (i + 1) / W times the base LR."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

from tasks.errors import UserError

WARMUPS = ("mmcv", "plain")


def with_warmup(
    factor: Callable[[int], float], warmup_steps: int, warmup_ratio: float, warmup: str
) -> Callable[[int], float]:
    if warmup not in WARMUPS:
        raise UserError(f"Unknown warm-up '{warmup}'. Choose one of {list(WARMUPS)}.")

    def schedule(step: int) -> float:
        if step >= warmup_steps:
            return factor(step)
        if warmup == "plain":
            return (step + 1) / warmup_steps
        return factor(step) * (1 - (1 - warmup_ratio) * (1 - step / warmup_steps))

    return schedule


def poly(
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    total_steps: int,
    power: float = 0.9,
    min_lr_ratio: float = 0.0,
    warmup_steps: int = 0,
    warmup_ratio: float = 0.1,
    warmup: str = "mmcv",
) -> LambdaLR:
    """mmcv's PolyLrUpdaterHook (by iteration): min + (base - min) * (1 - i / T) ** power."""

    def factor(step: int) -> float:
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - min(step, total_steps) / max(1, total_steps)) ** power

    return LambdaLR(optimizer, with_warmup(factor, warmup_steps, warmup_ratio, warmup))


def multistep(
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    total_steps: int,
    milestones: Sequence[int] = (40, 55),
    gamma: float = 0.1,
    warmup_steps: int = 0,
    warmup_ratio: float = 0.001,
    warmup: str = "mmcv",
    warmup_epochs: float | None = None,
) -> LambdaLR:
    """mmcv's StepLrUpdaterHook (by epoch): the LR times gamma at each milestone epoch. The
    warm-up lasts `warmup_steps` iterations, or `warmup_epochs` epochs when that is set."""
    bounds = sorted(int(m * steps_per_epoch) for m in milestones)
    if warmup_epochs is not None:
        warmup_steps = int(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        return gamma ** sum(step >= b for b in bounds)

    return LambdaLR(optimizer, with_warmup(factor, warmup_steps, warmup_ratio, warmup))
