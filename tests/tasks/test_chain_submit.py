"""Chains on a cluster: every stage run is one submitit job with `afterok` dependencies on
the runs it reads (checked against a recording stand-in for SLURM), and the whole chain
runs through submitit's local executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.studies import chain as chain_cli
from tests.conftest import ROOT, run_cli

QUICK = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "logger=csv",
    "export=true",
]
CHAIN = (
    "stages:\n"
    "  first:\n    experiment: classify_digits\n"
    "  other:\n    experiment: classify_digits\n    slurm: {gpus_per_node: 4}\n"
    "  second:\n    experiment: classify_digits\n"
    "    overrides: ['model.backbone.init={run:first}/export/model.safetensors']\n"
    "    seeds: [1, 2]\n"
    "compare:\n  metric: test/acc\n  baseline: first\n  rows: {first: first, second: second}\n"
)


class FakeJob:
    def __init__(self, job_id: int, params: dict, args: tuple):
        self.job_id, self.params, self.args = job_id, params, args


class FakeSlurm:
    """Records what would be submitted: parameters and the command of every job."""

    submitted: list[FakeJob] = []

    def __init__(self, folder, cluster=None):
        self.params: dict = {}

    def update_parameters(self, **params):
        self.params.update(params)

    def submit(self, fn, *args):
        job = FakeJob(100 + len(FakeSlurm.submitted), dict(self.params), args)
        FakeSlurm.submitted.append(job)
        return job


def test_slurm_jobs_depend_on_the_runs_they_read(tmp_path, monkeypatch):
    import submitit

    FakeSlurm.submitted = []
    monkeypatch.setattr(submitit, "AutoExecutor", FakeSlurm)
    path = tmp_path / "c.yaml"
    path.write_text(CHAIN)
    result = chain_cli.main(
        [
            str(path),
            "--dir",
            str(tmp_path / "d"),
            "--launcher",
            "slurm",
            "--slurm",
            "partition=gpu",
            "--slurm",
            "timeout_min=90",
            "trainer.max_epochs=1",
        ]
    )
    jobs = {job.params["name"].split("-", 1)[1]: job for job in FakeSlurm.submitted}
    assert list(jobs) == ["first", "other", "second_seed1", "second_seed2", "report"]
    assert "slurm_additional_parameters" not in jobs["first"].params and "dependency" not in str(jobs["other"].params)
    for name in ("second_seed1", "second_seed2"):
        assert jobs[name].params["slurm_additional_parameters"] == {"dependency": "afterok:100"}
    assert jobs["report"].params["slurm_additional_parameters"] == {"dependency": "afterok:100:101:102:103"}
    assert jobs["first"].params["slurm_partition"] == "gpu" and jobs["first"].params["timeout_min"] == 90
    assert jobs["other"].params["gpus_per_node"] == 4 and jobs["first"].params["gpus_per_node"] == 1
    command, _, waits = jobs["second_seed2"].args
    assert "seed=2" in command and any(a.startswith("model.backbone.init=") and "first/export" in a for a in command)
    assert waits == []  # SLURM holds the job back itself
    report_command = jobs["report"].args[0]
    assert report_command[-2:] == ["--dir", str((tmp_path / "d").resolve())] and "--launcher" not in report_command
    assert result["report_job"] == "104"


def test_a_stage_that_reads_the_chain_dir_waits_for_every_earlier_run(tmp_path):
    """`{run:x}/..` is the chain dir (RepFusion's picture, DeRy's table): on SLURM such a stage
    must depend on every run before it, not only on the run its placeholder names."""
    chain = chain_cli.OmegaConf.create(
        {
            "stages": {
                "a": {"experiment": "classify_digits"},
                "b": {"experiment": "classify_digits", "seeds": [1, 2]},
                "c": {"experiment": "classify_digits", "overrides": ["x={run:a}/export"]},
                "table": {"module": "dery.report", "overrides": ["chain={run:a}/.."]},
            }
        }
    )
    runs = chain_cli.plan(chain, tmp_path, [], {}, None)
    needs = {r.run_dir.relative_to(tmp_path.resolve()).as_posix(): r.needs for r in runs}
    assert needs["c"] == [(tmp_path / "a").resolve()]
    assert needs["table"] == [r.run_dir for r in runs[:-1]]


def test_bad_slurm_parameters_are_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CHAIN)
    result = run_cli([str(path), "--launcher", "slurm", "--slurm", "partition"], module="tasks.chain")
    assert result.returncode == 2 and "--slurm takes key=value" in result.stderr


@pytest.mark.slow
def test_a_chain_runs_through_the_submitit_local_executor(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        CHAIN.replace("    seeds: [1, 2]\n", "").replace(
            "  other:\n    experiment: classify_digits\n    slurm: {gpus_per_node: 4}\n", ""
        )
    )
    chain_dir = tmp_path / "d"
    result = run_cli(
        [str(path), "--dir", str(chain_dir), "--launcher", "submitit_local", *QUICK],
        module="tasks.chain",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logs = sorted(p.name for p in (chain_dir / "submitit").glob("*_log.out"))
    assert len(logs) == 3  # two stage jobs and the report job
    summary = json.loads((chain_dir / "chain_summary.json").read_text())
    assert [r["label"] for r in summary["rows"]] == ["first", "second"]
    second = json.loads((chain_dir / "second" / "summary.json").read_text())
    assert any(o.startswith("model.backbone.init=") and str(chain_dir / "first") in o for o in second["overrides"])
    assert "=== chain c finished" in result.stdout and Path(ROOT / "train.py").is_file()
