"""Every command a user types, driven with a bad key, a bad value and a bad file: exit code 2,
one message naming the culprit, no traceback, and nothing written by a command that stops
at its checks. In-process through the same guarded entry functions the commands run; the
slow tests run the real commands (and the kt-report console script) once each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.config.location import CONF_DIR
from tasks.run.boundary import run_guarded
from tasks.run.launch import hydra_command
from tasks.run.preflight import preflight
from tests.conftest import ROOT, TINY, compose_config, run_cli

JUNK = bytes(range(7, 256)) * 3  # not text, not a known format


def _exit(capsys, fn, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        fn(*args, **kwargs)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return exit_.value.code, err


def _hydra_app(module: str, config: str, args: list[str], monkeypatch):
    import importlib

    main = importlib.import_module(module).main
    monkeypatch.setattr(sys, "argv", [module, *args])
    return lambda: hydra_command(main, config)


# --- train.py ------------------------------------------------------------------------------
def test_train_bad_key_value_and_file(tmp_path, capsys):
    log_dir = f"paths.log_dir={tmp_path / 'logs'}"
    code, err = _exit(
        capsys, run_guarded, "train.py", preflight, ["train.py", "trainer.max_epoch=3", log_dir], CONF_DIR
    )
    assert code == 2 and "Unknown config key 'trainer.max_epoch'. Did you mean 'trainer.max_epochs'?" in err
    code, err = _exit(capsys, run_guarded, "train.py", preflight, ["train.py", "data.batch_size=0", log_dir], CONF_DIR)
    assert code == 2 and "data.batch_size=0 is out of range: ImageDataModule(batch_size) expects a value >= 1" in err
    assert not (tmp_path / "logs").exists()
    from train import train

    junk = tmp_path / "init.safetensors"
    junk.write_bytes(JUNK)
    run = tmp_path / "run"
    run.mkdir()
    cfg = compose_config([*TINY, f"model.backbone.init={junk}"], run)
    code, err = _exit(capsys, run_guarded, "train.py", train, cfg, run_dir=lambda: run)
    assert code == 2 and f"Weight file {junk} is not a safetensors or PyTorch checkpoint: it is a binary file" in err
    assert not run.exists()  # the failed start left no run dir


# --- DeRy stages (Hydra apps) ---------------------------------------------------------------
def test_dery_similarity_bad_key_value_and_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KT_LOG_DIR", str(tmp_path / "logs"))
    app = _hydra_app(
        "dery.similarity", "dery/similarity", ["dery/zoo=tiny", "zoo.members.resnet.acuracy=0.9"], monkeypatch
    )
    code, err = _exit(capsys, app)
    assert code == 2 and "Did you mean 'zoo.members.resnet.accuracy'?" in err
    app = _hydra_app("dery.similarity", "dery/similarity", ["dery/zoo=tiny", "probe.batch_size=-1"], monkeypatch)
    code, err = _exit(capsys, app)
    assert code == 2 and "probe.batch_size=-1 is out of range" in err and not (tmp_path / "logs").exists()
    junk = tmp_path / "member.pth"
    junk.write_bytes(JUNK)
    run = tmp_path / "run"
    app = _hydra_app(
        "dery.similarity",
        "dery/similarity",
        ["dery/zoo=tiny", f"zoo.members.resnet.weights=file:{junk}", f"hydra.run.dir={run}"],
        monkeypatch,
    )
    code, err = _exit(capsys, app)
    assert code == 2 and f"Weight file {junk} is not a safetensors or PyTorch checkpoint" in err and not run.exists()


def test_dery_partition_bad_key_value_and_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KT_LOG_DIR", str(tmp_path / "logs"))
    code, err = _exit(
        capsys, _hydra_app("dery.partition", "dery/partition", ["similarity=/x", "restart=5"], monkeypatch)
    )
    assert code == 2 and "Unknown config key 'restart'. Did you mean 'restarts'?" in err
    code, err = _exit(
        capsys, _hydra_app("dery.partition", "dery/partition", ["similarity=/x", "eps=-0.5"], monkeypatch)
    )
    assert code == 2 and "eps=-0.5 is out of range" in err and not (tmp_path / "logs").exists()
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "summary.json").write_bytes(JUNK)
    run = tmp_path / "run"
    app = _hydra_app(
        "dery.partition", "dery/partition", [f"similarity={tmp_path / 'sim'}", f"hydra.run.dir={run}"], monkeypatch
    )
    code, err = _exit(capsys, app)
    assert code == 2 and f"The similarity run's summary {tmp_path / 'sim' / 'summary.json'} is a binary file" in err
    assert not run.exists()


def test_dery_search_bad_key_value_and_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KT_LOG_DIR", str(tmp_path / "logs"))
    code, err = _exit(
        capsys, _hydra_app("dery.search", "dery/search", ["partition=/x", "budget.param=2e6"], monkeypatch)
    )
    assert code == 2 and "Did you mean 'budget.params'?" in err
    code, err = _exit(capsys, _hydra_app("dery.search", "dery/search", ["partition=/x", "mode=greedy"], monkeypatch))
    assert code == 2 and "mode='greedy' (a string) is not a valid choice" in err and not (tmp_path / "logs").exists()
    part = tmp_path / "part"
    part.mkdir()
    (part / "partition.json").write_text('{"zoo": "zoo.json", "sets": [')
    (part / "summary.json").write_text(json.dumps({"stage": "partition", "partition": str(part / "partition.json")}))
    run = tmp_path / "run"
    code, err = _exit(
        capsys, _hydra_app("dery.search", "dery/search", [f"partition={part}", f"hydra.run.dir={run}"], monkeypatch)
    )
    assert code == 2 and f"partition.json {part / 'partition.json'} is not valid JSON (it looks truncated)" in err
    assert not run.exists()


# --- argparse commands ----------------------------------------------------------------------
def test_dery_report_bad_key_value_and_file(tmp_path, capsys):
    from dery.report import main

    guarded_main = __import__("tasks.run.boundary", fromlist=["guarded"]).guarded("dery.report")(main)
    code, err = _exit(capsys, guarded_main, [f"chian={tmp_path}"])
    assert code == 2 and "unknown argument(s) ['chian=" in err
    code, err = _exit(capsys, guarded_main, [f"chain={tmp_path / 'nowhere'}"])
    assert code == 2 and f"no stage summaries under {tmp_path / 'nowhere'}" in err
    (tmp_path / "zoo_a").mkdir()
    (tmp_path / "zoo_a" / "summary.json").write_text('{"stage": "simil')
    code, err = _exit(capsys, guarded_main, [str(tmp_path)])
    summary = tmp_path / "zoo_a" / "summary.json"
    assert code == 2 and f"Stage summary {summary} is not valid JSON (it looks truncated)" in err


def _assembled_card(folder: Path) -> Path:
    from kf.assemble import assemble
    from kf.factor import FactorNetwork
    from kf.task_spec import build_tasks
    from tests.kf.conftest import TINY_NET

    specs = build_tasks([{"name": "low_high", "groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]}], {"label": 10})
    return Path(assemble(FactorNetwork(TINY_NET, TINY_NET, [2], feature_dim=0), specs).save(folder)["assembled"])


def test_kf_assemble_bad_key_value_and_file(tmp_path, capsys):
    from kf.assemble import main

    card = _assembled_card(tmp_path / "export")
    code, err = _exit(capsys, main, [str(card), "--tasks", "low_high", "--out", str(tmp_path / "o"), "--taks", "x"])
    assert code == 2 and "unrecognized arguments: --taks x" in err
    code, err = _exit(capsys, main, [str(card), "--tasks", "low_hihg", "--out", str(tmp_path / "o")])
    assert code == 2 and "Unknown tasks ['low_hihg']; this network holds ['low_high']" in err
    card.write_bytes(JUNK)
    code, err = _exit(capsys, main, [str(card), "--tasks", "low_high", "--out", str(tmp_path / "o")])
    assert code == 2 and f"Export card {card} is a binary file" in err and not (tmp_path / "o").exists()


def test_chain_bad_key_value_and_file_stop_before_the_chain_dir_exists(tmp_path, capsys):
    from tasks.studies.chain import main

    chain = tmp_path / "two.yaml"
    chain.write_text("stages:\n  a:\n    experiment: classify_digits\n  b:\n    experiment: classify_digits\n")
    chain_dir = tmp_path / "chain"
    code, err = _exit(capsys, main, [str(chain), "--dir", str(chain_dir), "trainer.max_epoch=1"])
    assert code == 2 and "Unknown config key 'trainer.max_epoch'. Did you mean 'trainer.max_epochs'?" in err
    code, err = _exit(capsys, main, [str(chain), "--dir", str(chain_dir), "b:model.optimizer.lr=-1"])
    assert code == 2 and "model.optimizer.lr=-1 is out of range: SGD(lr) expects a value > 0" in err
    assert not chain_dir.exists()
    chain.write_bytes(JUNK)
    code, err = _exit(capsys, main, [str(chain), "--dir", str(chain_dir)])
    assert code == 2 and f"Chain file {chain} is a binary file of an unknown kind, not a text file" in err


def test_kt_report_bad_key_value_and_file(tmp_path, capsys):
    from tasks.studies.report import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(
        json.dumps({"task_name": "t", "experiment": "classify_digits", "seed": 1, "test": {"test/acc": 0.5}})
    )
    code, err = _exit(capsys, main, [str(tmp_path), "--metirc", "test/acc"])
    assert code == 2 and "unrecognized arguments: --metirc" in err
    code, err = _exit(capsys, main, [str(tmp_path), "--baseline", "classify_digit"])
    assert code == 2 and "--baseline 'classify_digit' is not a row label. Labels: ['classify_digits']" in err
    (run / "summary.json").write_text('{"task_name": "t", "test": {"test/acc": 0.')
    code, err = _exit(capsys, main, [str(tmp_path)])
    assert code == 2 and f"Run summary {run / 'summary.json'} is not valid JSON" in err


# --- the real commands ------------------------------------------------------------------------
def _no_traceback(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    return result.stderr


@pytest.mark.slow
def test_the_reported_cases_as_commands(tmp_path):
    """The cases of the issue: a wrongly typed value, a junk resume file and a text file as
    weights through train.py; a valid key without '+' through dery.similarity."""
    logs = tmp_path / "logs"
    err = _no_traceback(run_cli(["trainer.max_epochs=abc", f"paths.log_dir={logs}"]))
    assert "trainer.max_epochs='abc' (a string) has the wrong type: Trainer(max_epochs) expects an integer" in err
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(JUNK)
    assert "is corrupt or not a PyTorch checkpoint" in _no_traceback(
        run_cli([f"resume={junk}", f"paths.log_dir={logs}"])
    )
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    err = _no_traceback(run_cli([f"model.backbone.init={text}", f"paths.log_dir={logs}", "logger=many", *TINY[:-2]]))
    assert f"Weight file {text} is not a safetensors or PyTorch checkpoint: it is a text file" in err
    assert not logs.exists() or not any(p.is_file() for p in logs.rglob("*"))  # no run dir, no W&B run
    err = _no_traceback(
        run_cli(["zoo.members.resnet.accuracy=0.4"], module="dery.similarity", env={"KT_LOG_DIR": str(logs)})
    )
    assert "Add it with a '+': +zoo.members.resnet.accuracy=0.4" in err


@pytest.mark.slow
def test_kt_report_and_kf_assemble_as_commands(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_bytes(JUNK)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kt-report"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert "Run summary" in _no_traceback(result) and "is a binary file" in result.stderr
    card = tmp_path / "assembled.json"
    card.write_text("[]")
    result = run_cli([str(card), "--tasks", "a", "--out", str(tmp_path / "o")], module="kf.assemble")
    assert f"Export card {card} holds a list, not a mapping of keys" in _no_traceback(result)
