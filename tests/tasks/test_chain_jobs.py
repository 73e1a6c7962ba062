"""A chain's numbers do not depend on its schedule: with the thread count fixed, the same chain
run one stage at a time and two side by side writes the same metrics.csv files, byte for byte,
and every run's summary records its thread count."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY, run_cli

QUICK = [o for o in TINY if not o.startswith("logger=")] + ["logger=csv"]
SEEDED = "stages:\n  fit:\n    experiment: classify_digits\n    seeds: [1, 2]\ncompare:\n  metric: test/acc\n"


@pytest.mark.slow
def test_one_at_a_time_and_side_by_side_give_the_same_metrics_bit_for_bit(tmp_path):
    chain = tmp_path / "seeded.yaml"
    chain.write_text(SEEDED)
    dirs = {}
    for jobs in (1, 2):
        dirs[jobs] = tmp_path / f"jobs{jobs}"
        args = [str(chain), "--dir", str(dirs[jobs]), "--jobs", str(jobs), "threads=1", *QUICK]
        result = run_cli(args, module="tasks.chain", timeout=900)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for seed in (1, 2):
        one, two = (dirs[j] / "fit" / f"seed{seed}" for j in (1, 2))
        assert (one / "metrics.csv").read_bytes() == (two / "metrics.csv").read_bytes()
        assert json.loads((two / "summary.json").read_text())["threads"] == 1
    assert sorted(p.name for p in (dirs[2] / "logs").iterdir()) == ["fit__seed1.log", "fit__seed2.log"]
    assert not (dirs[1] / "logs").exists()  # one at a time: the output goes to the chain's own
