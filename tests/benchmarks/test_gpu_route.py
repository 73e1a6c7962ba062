"""The GPU route, tested here on the CPU: the plan's chain entries give every training stage
the common overrides as `<stage>:key=value` (module stages their own), the jobs wait for
exactly the runs they read, every GPU command composes (the scheduler they run under is tested in
tests/tasks/test_scheduler.py), the throughput phase goes round by round until its
deadline, and the smoke mode runs the anchor (its step FLOPs equal a plain PyTorch count of
the same training step) and one whole chain end to end."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.gpu import throughput
from benchmarks.gpu.jobs import Job, nested_override
from benchmarks.gpu.studies import build_entries, load_plan
from benchmarks.gpu.timing import time_entries
from tasks.errors import UserError
from tasks.models.backbones import create_backbone
from tasks.run.preflight import check_stage_commands
from tasks.studies.chain import load_chain
from tests.conftest import ROOT
from tests.tasks.test_fashion import HAS_REAL

needs_fashion = pytest.mark.skipif(not HAS_REAL, reason="Fashion-MNIST not installed (make fashion)")
PLAN = load_plan()
GPU_COMMON = PLAN["common"]["gpu"]
REPFUSION_TRAINING = [
    "teacher",
    "baseline",
    "distil_rl",
    "finetune_rl",
    "distil_uniform",
    "finetune_uniform",
    "distil_fixed",
    "finetune_fixed",
]


def test_chain_command_prefixes_the_common_overrides_for_each_training_stage(tmp_path):
    entry = build_entries(PLAN, "gpu", tmp_path, ["repfusion"])["repfusion"]
    args = shlex.split(entry["command"])
    prefixed = [f"{stage}:{o}" for stage in REPFUSION_TRAINING for o in GPU_COMMON]
    nested = (
        "oracle:distill.overrides=['trainer.max_epochs=4','model.scheduler.milestones=[3]','logger=csv',"
        "'trainer=gpu','trainer.precision=bf16-mixed','logger=csv','data.num_workers=0']"
    )
    assert args == [
        "-m",
        "tasks.chain",
        "repfusion_fashion_study",
        *prefixed,
        nested,
        "--dir",
        str((tmp_path / "repfusion").resolve()),
    ]


def test_training_runs_carry_the_gpu_overrides_and_module_stages_do_not(tmp_path):
    entry = build_entries(PLAN, "gpu", tmp_path, ["repfusion"])["repfusion"]
    jobs = {j.key: j for j in entry["jobs"]}
    chain_dir = (tmp_path / "repfusion").resolve()
    assert jobs["repfusion/finetune_rl/seed2"].command == [
        sys.executable,
        "-m",
        "tasks.train",
        "experiment=repfusion_fashion_finetune",
        f"model.backbone.init={chain_dir}/distil_rl/seed2/export/backbone.safetensors",
        *GPU_COMMON,
        "seed=2",
        f"hydra.run.dir={chain_dir}/finetune_rl/seed2",
    ]
    for key, job in jobs.items():
        stage = key.split("/")[1]
        assert [o for o in GPU_COMMON if o in job.command] == (GPU_COMMON if stage in REPFUSION_TRAINING else []), key


def test_module_stages_get_their_own_overrides_after_the_chains(tmp_path):
    entries = build_entries(PLAN, "gpu", tmp_path, ["dery"])
    search = next(j for j in entries["dery"]["jobs"] if j.key == "dery/search_large").command
    assert search.index("threads=2") > search.index("threads=1") and "device=cuda" in search
    assert not any(o.startswith("trainer") for o in search)
    smoke = build_entries(PLAN, "smoke", tmp_path, ["repfusion"])["repfusion"]
    oracle = next(j for j in smoke["jobs"] if j.key == "repfusion/oracle").command
    assert "grid=[10,500]" in oracle and "distill.grid=[10]" in oracle
    assert oracle.index("distill.grid=[10]") > oracle.index("distill.grid=[10,200,500,800]")


def test_nested_overrides_append_to_the_module_default_when_the_chain_sets_none():
    chain = load_chain("repfusion_digits_study")
    del chain.stages.oracle.overrides  # the oracle then runs conf/repfusion/oracle.yaml's distill.overrides
    assert nested_override(chain, "oracle", "distill.overrides", ["trainer=gpu"]) == (
        "distill.overrides=['trainer.max_epochs=6','model.scheduler.milestones=[4,5]','logger=csv','trainer=gpu']"
    )


def test_jobs_wait_for_the_runs_they_read(tmp_path):
    entries = build_entries(PLAN, "gpu", tmp_path, ["repfusion", "dery", "kf"])
    deps = {j.key: j.deps for e in entries.values() for j in e["jobs"]}
    assert deps["repfusion/teacher"] == [] and deps["repfusion/baseline/seed3"] == []
    assert deps["repfusion/finetune_rl/seed2"] == ["repfusion/distil_rl/seed2"]
    assert deps["repfusion/distil_fixed/seed1"] == ["repfusion/oracle", "repfusion/teacher"]
    # picture and table read the chain dir ({run:x}/..): they wait for every earlier run
    earlier = sorted(k for k in deps if k.startswith("repfusion/") and k != "repfusion/picture")
    assert deps["repfusion/picture"] == earlier
    assert deps["dery/table"] == sorted(k for k in deps if k.startswith("dery/") and k != "dery/table")
    assert deps["kf/groups/seed1"] == ["kf/teacher"]
    assert [len(e["jobs"]) for e in entries.values()] == [24, 25, 10]
    smoke = build_entries(PLAN, "smoke", tmp_path, ["repfusion", "dery", "kf"])
    assert [len(e["jobs"]) for e in smoke.values()] == [10, 15, 4]  # one seed each


def test_every_gpu_command_composes(tmp_path):
    """The GPU-only overrides (trainer=gpu, device=cuda, threads) never run here: their keys and
    values are checked by composing every command of the GPU plan as each run would."""
    entries = build_entries(PLAN, "gpu", tmp_path, list(PLAN["runs"]))
    check_stage_commands([j.command for e in entries.values() for j in e["jobs"]])
    broken = {**PLAN, "common": {**PLAN["common"], "gpu": [*GPU_COMMON, "trainer.precison=bf16-mixed"]}}
    with pytest.raises(UserError, match="precison"):
        check_stage_commands([j.command for j in build_entries(broken, "gpu", tmp_path, ["kf"])["kf"]["jobs"]])


def plain_step_flops(batch: int) -> float:
    model = create_backbone("resnet18", num_classes=10, small_input_stem=True)
    x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()  # the augmentation's affine grid and the SGD update count no FLOPs here


def smoke(tmp_path: Path, only: str, *extra: str, exit_code: int = 0) -> tuple[dict, str]:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "benchmarks.gpu.studies", "--smoke", "--only", only, "--out", str(out), *extra]
    result = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == exit_code, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "gpu_summary.json").read_text()), (out / "gpu_report.md").read_text()


@needs_fashion
def test_a_spent_budget_starts_nothing_and_still_writes_the_report(tmp_path):
    summary, report = smoke(tmp_path, "kf", "--budget-s", "0.01", "--no-throughput", exit_code=1)
    assert [j["state"] for j in summary["jobs"]] == ["not started"] * 4
    assert summary["entries"]["kf"]["chain"]["unfinished"] == sorted(j["key"] for j in summary["jobs"])
    assert "| kf | 0 of 4 | 0 / 0 / 4 |" in report and "- kf/groups/seed0: not started" in report


@needs_fashion
@pytest.mark.slow
def test_smoke_mode_runs_the_anchor_and_counts_the_step_flops(tmp_path):
    summary, report = smoke(tmp_path, "anchor")
    assert [(j["key"], j["state"], j["exit_code"]) for j in summary["jobs"]] == [("anchor", "done", 0)]
    assert set(summary["jobs"][0]["summary"]["test"]) == {"test/acc", "test/acc_top5", "test/loss"}
    timed = summary["entries"]["anchor"]["throughput"]
    assert [(t["batch_size"], t["channels_last"]) for t in timed] == [(16, False), (16, True)]
    assert timed[0]["flops_per_step"] == timed[1]["flops_per_step"] == plain_step_flops(16)
    assert timed[0]["tflops"] == pytest.approx(timed[0]["flops_per_step"] / timed[0]["step_s"] / 1e12)
    assert "CPU smoke mode" in report and "| anchor | 1 of 1 | 0 / 0 / 0 |" in report
    assert "| anchor | 16 | True | False |" in report


@needs_fashion
@pytest.mark.slow
def test_smoke_mode_runs_a_whole_chain_and_writes_its_study_tables(tmp_path):
    summary, report = smoke(tmp_path, "kf", "--no-throughput")
    assert [(j["key"], j["state"]) for j in summary["jobs"]] == [
        ("kf/teacher", "done"),
        ("kf/one_vs_rest/seed0", "done"),
        ("kf/one_vs_rest_original/seed0", "done"),
        ("kf/groups/seed0", "done"),
    ]
    chain = summary["entries"]["kf"]["chain"]
    assert [t["metric"] for t in chain["tables"]][:2] == ["test/acc", "test/task_bacc_gap"]
    assert "## kf: kf_fashion" in report and "KF assembled 10 factors" in report
    assert (Path(chain["chain_dir"]) / "report.png").is_file()


class FakeRecipe:
    """Stands in for throughput.Recipe: fits up to `limit` images a batch, then runs out of memory."""

    def __init__(self, run_dir, extra, limit: int = 1000, batch_size: int = 128):
        self.run_dir, self.limit, self.batch_size, self.tried = run_dir, limit, batch_size, []

    def fit(self, batch_size: int, batches: int, *args, **kwargs):
        self.tried.append(batch_size)
        if batch_size > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")


def test_largest_batch_doubles_until_the_memory_runs_out_or_the_cap():
    recipe = FakeRecipe(None, [], limit=3000)
    assert throughput.largest_batch(recipe, 128, 16384) == 2048 and recipe.tried == [256, 512, 1024, 2048, 4096]
    assert throughput.largest_batch(FakeRecipe(None, [], limit=10**9), 128, 16384) == 16384


def test_throughput_rounds_go_entry_by_entry_and_stop_at_the_deadline(tmp_path, monkeypatch):
    calls = []

    def fake_measure(recipe, batch, steps, warmup, channels_last, compile_model, flops):
        calls.append((recipe.run_dir.name, batch, channels_last, compile_model, flops))
        return {"batch_size": batch, "channels_last": channels_last, "compile": compile_model, "flops_per_step": 7.0}

    monkeypatch.setattr(throughput, "Recipe", FakeRecipe)
    monkeypatch.setattr(throughput, "measure", fake_measure)
    entries = {
        name: {"spec": {"throughput": True}, "jobs": [Job(name, name, [], tmp_path / name, state="done")]}
        for name in ("a", "b")
    }
    results = time_entries(entries, [], smoke=False, deadline=time.monotonic() + 600, compile_option=True)
    assert [c[:4] for c in calls] == [
        (n, b, cl, co)
        for b, cl, co in [
            (128, False, False),
            (128, True, False),
            (512, False, False),
            (512, True, False),
            (512, True, True),
        ]
        for n in "ab"
    ]
    assert [c[4] for c in calls] == [None, None, 7.0, 7.0, None, None, 7.0, 7.0, 7.0, 7.0]  # eager count reused
    assert [len(r) for r in results.values()] == [5, 5]
    spent = time_entries(entries, [], smoke=False, deadline=time.monotonic() + 5, compile_option=True)
    assert {r["error"] for r in spent["a"]} == {"skipped: the time budget is spent"} and len(spent["a"]) == 2
