"""Both digits experiments under real 2-process DDP on the CPU (trainer=ddp_cpu): the logged
test metrics are those of both ranks' samples together."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import read_summary, run_cli
from tests.dense.recompute import landmark_metrics, miou, predictions

TINY_DDP = [
    "trainer=ddp_cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "logger=csv",
    "data.batch_size=8",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment,metric,extra",
    [
        ("seg_digits", "test/miou", []),
        ("landmarks_shapes", "test/nme", ["data.train_size=32", "data.val_size=16", "data.test_size=16"]),
    ],
)
def test_digits_experiments_under_ddp_cpu(experiment, metric, extra, tmp_path):
    result = run_cli([f"experiment={experiment}", *TINY_DDP, *extra, f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(tmp_path)
    # one test batch of 8 on each rank: DistributedSampler gives rank r the samples r, r + 2, ... -> samples 0..15
    preds, batches = predictions([f"experiment={experiment}", *TINY_DDP, *extra], tmp_path, summary, limit=2)
    if metric == "test/miou":
        expected = miou(preds, [b[0] for b in batches], 11)[0]
    else:
        points, visible = (torch.cat([b[i] for b in batches]).numpy() for i in range(2))
        expected = landmark_metrics(torch.cat(preds).numpy(), points, visible, (8, 11))["nme"]
    assert summary["test"][metric] == pytest.approx(expected, abs=1e-5)
    assert list((tmp_path / "plots").glob("test_*.png"))
