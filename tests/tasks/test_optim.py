"""Per-step LR schedules: golden values."""

import pytest
import torch

from tasks.training.optim import cosine, multistep, poly


def _lrs(factory, steps, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = factory(opt, **kw)
    values = []
    for _ in range(steps):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


def test_multistep_with_warmup():
    lrs = _lrs(multistep, 8, steps_per_epoch=2, total_steps=8, milestones=[2, 3], gamma=0.1, warmup_epochs=1)
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_cosine_from_peak_to_floor():
    lrs = _lrs(cosine, 11, steps_per_epoch=1, total_steps=10, warmup_epochs=0, min_lr_ratio=0.1)
    assert lrs[0] == pytest.approx(1.0) and lrs[5] == pytest.approx(0.55) and lrs[10] == pytest.approx(0.1)


def test_poly():
    lrs = _lrs(poly, 3, steps_per_epoch=1, total_steps=4, power=1.0)
    assert lrs == pytest.approx([1.0, 0.75, 0.5])
