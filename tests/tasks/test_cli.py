"""train.py and the chain runner as a user runs them: real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, read_summary, run_cli

QUICK = [o for o in TINY if not o.startswith("logger=")]


def test_help_lists_the_config_groups():
    out = run_cli(["--help"]).stdout
    for group in (
        "experiment:",
        "trainer:",
        "logger:",
        "callbacks:",
        "data:",
        "model:",
        "debug:",
        "hparams_search:",
        "paths:",
    ):
        assert group in out
    assert "ddp_cpu" in out


def test_unknown_key_fails_with_one_message_naming_the_fix():
    result = run_cli(["trainer.max_epoch=3"])
    assert result.returncode == 2
    assert "Unknown config key 'trainer.max_epoch'" in result.stderr and "trainer.max_epochs" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_data_dir_and_pickled_checkpoint_fail_cleanly(tmp_path):
    missing = run_cli([f"paths.data_dir={tmp_path / 'none'}", "data=cifar10", f"paths.log_dir={tmp_path}"])
    assert missing.returncode == 2 and "cifar-10-batches-py" in missing.stderr and "Traceback" not in missing.stderr
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00garbage")
    corrupt = run_cli([f"resume={bad}", f"paths.log_dir={tmp_path}", *QUICK])
    assert corrupt.returncode == 2 and "corrupt" in corrupt.stderr and "Traceback" not in corrupt.stderr


@pytest.mark.slow
def test_ddp_cpu_runs_two_processes_into_one_run_dir(tmp_path):
    result = run_cli(
        ["trainer=ddp_cpu", "logger=many", f"paths.log_dir={tmp_path}", *QUICK, "logger=many"], timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "classify_digits" / "runs").iterdir())
    assert len(runs) == 1
    assert len(list(tmp_path.rglob("checkpoints"))) == 1 and len(list(tmp_path.rglob(".hydra"))) == 1
    run = runs[0]
    assert (run / "metrics.csv").is_file() and list((run / "wandb").glob("offline-run-*"))
    summary = read_summary(run)
    assert summary["global_step"] == 2 and "test/acc" in summary["test"]
    # two processes, one epoch line: it goes through the rank-zero logger (and rank 1 disables its bar)
    epoch_lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("epoch 1/1 ")]
    assert len(epoch_lines) == 1 and "train/loss=" in epoch_lines[0] and "val/acc=" in epoch_lines[0], epoch_lines


@pytest.mark.slow
def test_multirun_sweep_then_report(tmp_path):
    result = run_cli(["-m", "seed=1,2", f"paths.log_dir={tmp_path}", *QUICK, "export=false"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = next((tmp_path / "classify_digits" / "multiruns").iterdir())
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    report = run_cli([str(sweep), "--metric", "test/acc"], module="tasks.studies.report")
    assert report.returncode == 0, report.stderr
    table = (sweep / "report.md").read_text()
    assert "| classify_digits " in table and "| 2 |" in table and (sweep / "report.png").is_file()


def test_multirun_with_a_process_launching_strategy_is_refused(tmp_path):
    result = run_cli(["-m", "seed=1,2", "trainer=ddp_cpu", f"paths.log_dir={tmp_path}", *QUICK])
    assert result.returncode == 2 and "hydra/launcher=slurm" in result.stderr


@pytest.mark.slow
def test_resume_auto_continues_the_interrupted_run_in_place(tmp_path):
    args = [f"paths.log_dir={tmp_path}", *QUICK, "export=false", "logger=many"]
    first = run_cli(args)
    assert first.returncode == 0, first.stderr[-3000:]
    run = next((tmp_path / "classify_digits" / "runs").iterdir())
    wandb_id = (run / "wandb_id.txt").read_text()
    (run / "summary.json").unlink()  # as if the job had been pre-empted after its checkpoint
    second = run_cli(args + ["resume=auto", "trainer.max_epochs=2"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert [p.name for p in (tmp_path / "classify_digits" / "runs").iterdir()] == [run.name]
    assert read_summary(run)["global_step"] == 4 and (run / "wandb_id.txt").read_text() == wandb_id
    assert len(list((run / "wandb").glob("offline-run-*"))) == 2  # two sessions of one W&B run id
    assert all(wandb_id in p.name for p in (run / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_chain_hands_an_export_to_the_next_stage(tmp_path):
    chain = tmp_path / "two_stages.yaml"
    chain.write_text(
        "stages:\n"
        "  first:\n    experiment: classify_digits\n"
        "  second:\n    experiment: classify_digits\n"
        "    overrides: ['model.backbone.init={run:first}/export/model.safetensors']\n"
        "compare:\n  metric: test/acc\n  rows: {first: first, second: second}\n"
    )
    chain_dir = tmp_path / "chain"
    only_first = run_cli(
        [str(chain), "--dir", str(chain_dir), "--stages", "first", *QUICK], module="tasks.chain", timeout=900
    )
    assert only_first.returncode == 0, only_first.stderr[-3000:]
    assert (chain_dir / "first" / "summary.json").is_file() and not (chain_dir / "second").exists()
    assert "stages ['second'] have not run yet" in only_first.stdout and not (chain_dir / "chain_summary.json").exists()
    result = run_cli([str(chain), "--dir", str(chain_dir), *QUICK], module="tasks.chain", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("already finished") == 1
    summary = json.loads((chain_dir / "chain_summary.json").read_text())
    assert [r["label"] for r in summary["rows"]] == ["first", "second"]
    assert any("model.backbone.init=" in o for o in read_summary(chain_dir / "second")["overrides"])
    assert Path(chain_dir / "report.md").read_text().startswith("| stage | n | test/acc mean ± std | 95 % CI |")


def test_chain_errors_name_the_fix(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "stages:\n  a:\n    experiment: classify_digits\n    overrides: ['x={run:later}']\n"
        "  later:\n    experiment: classify_digits\n"
    )
    result = run_cli([str(bad)], module="tasks.chain")
    assert result.returncode == 2 and "not an earlier stage" in result.stderr
    unknown = run_cli(["no_such_chain"], module="tasks.chain")
    assert unknown.returncode == 2 and "Available:" in unknown.stderr
    good = tmp_path / "good.yaml"
    good.write_text("stages:\n  a:\n    experiment: classify_digits\n")
    wrong_stage = run_cli([str(good), "--stages", "a,nope"], module="tasks.chain")
    assert wrong_stage.returncode == 2 and "--stages names ['nope']" in wrong_stage.stderr


def test_root_is_the_repository():
    assert (ROOT / "train.py").is_file()
