"""The train.py pipeline in-process: fast_dev_run, checkpoints that load without pickled
code, export that timm reloads, and a resumed run that matches an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch

from tasks.data.digits import DigitsDataModule
from tasks.errors import UserError
from tasks.io.checkpoints import load_checkpoint
from tasks.models.backbones import load_exported
from tests.conftest import TINY, read_summary, run_in_process


def test_fast_dev_run_of_the_classifier(tmp_path):
    summary = run_in_process(["debug=fast"], tmp_path / "run")
    assert summary["global_step"] == 1
    assert set(summary["test"]) >= {"test/acc", "test/acc_top5", "test/loss"}
    assert read_summary(tmp_path / "run")["task_name"] == "classify_digits"


def test_checkpoint_loads_weights_only_and_export_reloads_with_timm(tmp_path):
    run = tmp_path / "run"
    summary = run_in_process(TINY + ["trainer.limit_test_batches=2"], run)
    ckpt = load_checkpoint(summary["checkpoints"]["last"])  # weights_only=True inside
    assert any(k.startswith("net.") for k in ckpt["state_dict"])
    model = load_exported(run / "export").eval()
    card = json.loads((run / "export" / "config.json").read_text())  # timm's Hub config, the export's one card
    assert card["kind"] == "timm" and card["architecture"] == "resnet18"
    assert card["run"]["run_dir"] == str(run) and card["run"]["test"] == summary["test"]
    assert card["pretrained_cfg"]["mean"] == list(DigitsDataModule.mean) and card["pretrained_cfg"]["input_size"] == [
        3,
        32,
        32,
    ]
    assert not (run / "export" / "card.json").exists()
    # the exported weights are the tested (best) checkpoint's
    best = load_checkpoint(summary["checkpoints"]["best"])["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[f"net.{key}"]), key
    assert (run / "metrics.csv").is_file() and (run / "summary.json").is_file()


@pytest.mark.parametrize("ema", [[], ["model.ema_decay=0.9"]], ids=["plain", "ema"])
def test_resumed_run_matches_an_uninterrupted_one(tmp_path, ema):
    common = [
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.num_sanity_val_steps=0",
        "logger=csv",
        "trainer.deterministic=true",
        "trainer.enable_model_summary=false",
        "export=false",
        *ema,
    ]
    straight = run_in_process(common + ["trainer.max_epochs=2"], tmp_path / "straight")
    run_in_process(common + ["trainer.max_epochs=1"], tmp_path / "split")
    resumed = run_in_process(common + ["trainer.max_epochs=2", f"resume={tmp_path / 'split'}"], tmp_path / "split")
    assert resumed["global_step"] == straight["global_step"] == 6
    assert resumed["test"] == straight["test"]
    for key in ("val/acc", "val/loss", "val/acc_best", "train/loss"):
        assert resumed["final"][key] == straight["final"][key], key


def test_resume_from_a_missing_run_dir_is_a_clear_error(tmp_path):
    from tasks.run.resume import resume_run_dir

    with pytest.raises(UserError, match="no such file"):
        resume_run_dir(str(tmp_path / "nothing"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="last.ckpt does not exist"):
        resume_run_dir(str(tmp_path / "empty"), tmp_path)


def test_resume_auto_picks_the_newest_unfinished_run(tmp_path):
    import os
    import time

    from tasks.run.resume import latest_unfinished_run

    for name, finished in (("a", False), ("b", False), ("c", True)):
        ckpt = tmp_path / name / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"x")
        if finished:
            (tmp_path / name / "summary.json").write_text("{}")
        time.sleep(0.01)
    os.utime(tmp_path / "a" / "checkpoints" / "last.ckpt")  # a is the newest unfinished
    assert latest_unfinished_run(tmp_path) == tmp_path / "a"


def test_pickled_code_and_corrupt_checkpoints_are_refused(tmp_path):
    import subprocess

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": subprocess.Popen}, evil)  # a global that would be imported
    with pytest.raises(UserError, match="pickled Python objects"):
        load_checkpoint(evil)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(corrupt)
    with pytest.raises(UserError, match="pickled Python objects"):
        run_in_process(TINY + [f"model.backbone.init={evil}"], tmp_path / "run")


def test_wandb_run_id_is_kept_per_run_dir(tmp_path):
    from tasks.training.loggers import run_id

    first = run_id(tmp_path)
    assert run_id(tmp_path) == first and len(first) == 8


def test_bf16_mixed_with_weight_ema(tmp_path):
    """model.ema_decay: the checkpoint holds the EMA beside the network, one update per optimiser
    step; the test phase and the export use the EMA, not the network."""
    from safetensors.torch import load_file

    run = tmp_path / "run"
    # Two steps at the full learning rate (no warm-up), so that the network moves away from its EMA;
    # bf16 on the CPU is slow (six steps took 250 s), so no more.
    steps = 2
    overrides = ["trainer.precision=bf16-mixed", "model.ema_decay=0.5", "model.scheduler.warmup_epochs=0"]
    summary = run_in_process(TINY + overrides + [f"trainer.limit_train_batches={steps}"], run)
    state = load_checkpoint(summary["checkpoints"]["last"])["state_dict"]
    ema = {k.removeprefix("ema.model."): v for k, v in state.items() if k.startswith("ema.model.")}
    net = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    assert ema.keys() == net.keys() and int(state["ema.num_updates"]) == summary["global_step"] == steps
    exported = load_file(str(run / "export" / "model.safetensors"))
    assert all(torch.equal(exported[k], v) for k, v in ema.items())
    assert any(not torch.equal(v, net[k]) for k, v in ema.items() if v.is_floating_point() and "running" not in k)
    data = DigitsDataModule(batch_size=64)
    data.setup("test")
    x, y = next(iter(data.test_dataloader()))
    losses = {}
    for name, weights in (("ema", ema), ("net", net)):
        model = load_exported(run / "export").eval()
        model.load_state_dict(weights)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            losses[name] = float(torch.nn.functional.cross_entropy(model(data.normalize(x)).float(), y))
    # The same batch under the same autocast: the test phase's loss is the EMA's to float precision
    # (equal here), and the network's lies ten tolerances or more away (7e-4 here), so the check tells them apart.
    assert summary["test"]["test/loss"] == pytest.approx(losses["ema"], abs=1e-5), losses
    assert abs(losses["net"] - losses["ema"]) > 1e-4, losses
