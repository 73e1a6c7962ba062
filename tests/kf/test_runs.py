"""KF as a user runs it: a real 2-process DDP run on the CPU, and the digits chain (teacher
-> factorize) as one command, both with tiny limits."""

from __future__ import annotations

import json

import pytest
import torch

from kf.metrics import accuracy
from tests.conftest import TINY, read_summary, run_cli
from tests.kf.conftest import evaluate_export, load_test_split, shrink

SMALL_KF = [*shrink("ckn"), *shrink("tsn", ("name", "channels", "stem_width")), *TINY, "trainer.limit_test_batches=2"]


@pytest.mark.slow
def test_ddp_cpu_two_processes(digits_teacher, tmp_path):
    overrides = [
        "experiment=kf_digits",
        f"model.teacher.source={digits_teacher}",
        *SMALL_KF,
        "+data.eval_batch_size=32",
    ]
    result = run_cli([*overrides, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    test = read_summary(tmp_path / "run")["test"]
    # Rank r tests samples r, r + 2, ...: two batches of 32 on each of the two ranks = the first 128
    # test samples, gathered rank-major. The single-process evaluation of the export on them must agree.
    x, y = load_test_split(overrides, tmp_path / "data", batches=4)
    rank_major = torch.cat([torch.arange(0, 128, 2), torch.arange(1, 128, 2)])
    x, y = x[rank_major], y[rank_major]
    mine = evaluate_export(str(tmp_path / "run" / "export" / "assembled.json"), x, y, ["label"], batch_size=32)
    margins = torch.stack([lg[:, 1] - lg[:, 0] for lg in mine["logits"]], 1)
    assert test["test/acc"] == pytest.approx(float((margins.argmax(1) == y).float().mean()), abs=1e-6)
    assert test["test/task_acc/class3"] == pytest.approx(accuracy(mine["logits"][3], mine["targets"][:, 3]), abs=1e-6)
    assert test["test/cross_probe/own_mean"] == pytest.approx(mine["leakage"]["test/cross_probe/own_mean"], abs=1e-6)


@pytest.mark.slow
def test_digits_chain_runs_teacher_then_factorize(tmp_path):
    tiny = [o for o in TINY if not o.startswith("logger=")]
    result = run_cli(
        [
            "kf_digits",
            *[f"teacher:{o}" for o in tiny],
            *[f"factorize:{o}" for o in SMALL_KF if not o.startswith("logger=")],
            "--dir",
            str(tmp_path / "chain"),
        ],
        module="tasks.chain",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "chain" / "chain_summary.json").read_text())
    rows = {r["label"]: r for r in report["rows"]}
    assert set(rows) == {"teacher (ResNet-18)", "KF assembled 10 factors"}
    factorize = read_summary(tmp_path / "chain" / "factorize")
    assert factorize["overrides"][1] == f"model.teacher.source={tmp_path / 'chain' / 'teacher'}/export"
    assert "test/teacher_acc" in factorize["test"]
