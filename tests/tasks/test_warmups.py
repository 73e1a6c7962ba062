"""mmcv's linear warm-up on mmseg's poly and mmpose's step schedules (tasks.training.optim),
against the formula lr = scheduled * (1 - (1 - ratio) * (1 - i / W))."""

from __future__ import annotations

import pytest
import torch

from tasks.errors import UserError
from tasks.training.optim import multistep, poly


def factors(make, steps: list[int], **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = make(optimizer, **kwargs)
    return [schedule.lr_lambdas[0](s) for s in steps]


def test_poly_warmup_starts_at_the_ratio_of_the_scheduled_lr():
    kw = dict(
        steps_per_epoch=1000,
        total_steps=160000,
        power=0.9,
        min_lr_ratio=0.02,
        warmup_steps=1000,
        warmup_ratio=0.1,
        warmup="mmcv",
    )
    regular = [0.02 + 0.98 * (1 - s / 160000) ** 0.9 for s in (0, 500, 999, 1000, 80000)]
    got = factors(poly, [0, 500, 999, 1000, 80000], **kw)
    warm = [0.1, 0.55, 1 - 0.9 / 1000, 1.0, 1.0]
    assert got == pytest.approx([w * r for w, r in zip(warm, regular)])
    plain = factors(poly, [0, 499], **{**kw, "warmup": "plain"})  # the previous warm-up: (i + 1) / W of the base LR
    assert plain == pytest.approx([1 / 1000, 500 / 1000])


def test_step_schedule_with_mmposes_500_iteration_warmup():
    kw = dict(
        steps_per_epoch=100,
        total_steps=6000,
        milestones=[40, 55],
        gamma=0.1,
        warmup_steps=500,
        warmup_ratio=0.001,
        warmup="mmcv",
    )
    got = factors(multistep, [0, 250, 500, 3999, 4000, 5500], **kw)
    assert got == pytest.approx([0.001, 1 - 0.999 * 0.5, 1.0, 1.0, 0.1, 0.01])
    epochs = factors(multistep, [0, 849, 850], **{**kw, "warmup": "plain", "warmup_epochs": 8.5})
    assert epochs == pytest.approx([1 / 850, 1.0, 1.0])
    with pytest.raises(UserError, match="mmcv"):
        factors(multistep, [0], **{**kw, "warmup": "cosine"})
