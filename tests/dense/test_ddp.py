"""Both digits experiments under real 2-process DDP on the CPU (trainer=ddp_cpu)."""

from __future__ import annotations

import pytest

from tests.conftest import read_summary, run_cli

TINY_DDP = ["trainer=ddp_cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0", "logger=csv", "data.batch_size=8"]


@pytest.mark.slow
@pytest.mark.parametrize("experiment,metric,extra", [
    ("seg_digits", "test/miou", []),
    ("landmarks_shapes", "test/nme", ["data.train_size=32", "data.val_size=16", "data.test_size=16"]),
])
def test_digits_experiments_under_ddp_cpu(experiment, metric, extra, tmp_path):
    result = run_cli([f"experiment={experiment}", *TINY_DDP, *extra, f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(tmp_path)
    assert metric in summary["test"]
    assert (tmp_path / "plots").is_dir() and list((tmp_path / "plots").glob("test_*.png"))
