"""KF as a user runs it: a real 2-process DDP run on the CPU, and the digits chain (teacher
-> factorize) as one command, both with tiny limits."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY, read_summary, run_cli
from tests.kf.conftest import shrink

SMALL_KF = [*shrink("ckn"), *shrink("tsn", ("name", "channels", "stem_width")), *TINY, "trainer.limit_test_batches=2"]


@pytest.mark.slow
def test_ddp_cpu_two_processes(digits_teacher, tmp_path):
    result = run_cli(["experiment=kf_digits", "trainer=ddp_cpu", f"model.teacher.source={digits_teacher}", *SMALL_KF,
                      f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(tmp_path)
    assert summary["test"]["test/leakage_offdiag_max"] == 0.0
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0
    assert (tmp_path / "export" / "assembled.json").is_file()


@pytest.mark.slow
def test_digits_chain_runs_teacher_then_factorize(tmp_path):
    tiny = [o for o in TINY if not o.startswith("logger=")]
    result = run_cli(["kf_digits", *[f"teacher:{o}" for o in tiny], *[f"factorize:{o}" for o in SMALL_KF if not o.startswith("logger=")],
                      "--dir", str(tmp_path / "chain")], module="tasks.chain")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "chain" / "chain_summary.json").read_text())
    rows = {r["label"]: r for r in report["rows"]}
    assert set(rows) == {"teacher (ResNet-18)", "KF assembled 10 factors"}
    factorize = read_summary(tmp_path / "chain" / "factorize")
    assert factorize["overrides"][1] == f"model.teacher.source={tmp_path / 'chain' / 'teacher'}/export/model.json"
    assert "test/teacher_acc" in factorize["test"]
