"""tasks.training.collector.Collector (torchmetrics' CatMetric per name): batches concatenated in order,
floats as float32, labels in their own dtype, NaNs kept (KF's metrics must see them). Under
DDP it gathers rank-major: tests/kf/test_runs.py and tests/repfusion/test_runs.py compare a
2-process run's gathered results with one process's."""

from __future__ import annotations

import torch

from tasks.training.collector import Collector


def test_batches_concatenate_in_order_with_their_dtypes_and_nans():
    collector = Collector()
    assert not collector
    first, second = torch.tensor([[1.0, float("nan")]], dtype=torch.bfloat16), torch.tensor([[2.5, 3.0], [4.0, 5.0]])
    collector.add(z=first, y=torch.tensor([7]), keep=torch.tensor([True]))
    collector.add(z=second, y=torch.tensor([8, 9]), keep=torch.tensor([False, True]))
    out = collector.gather()
    assert out["z"].dtype == torch.float32 and torch.equal(out["z"][1:], second)
    assert out["z"][0, 0] == 1.0 and torch.isnan(out["z"][0, 1])
    assert out["y"].dtype == torch.int64 and out["y"].tolist() == [7, 8, 9]
    assert out["keep"].dtype == torch.bool and out["keep"].tolist() == [True, False, True]
    assert not collector and collector.gather() == {}  # a gather starts the next epoch afresh
