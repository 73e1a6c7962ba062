"""kill -9 in the middle of an epoch, then resume: every method ends with the test metrics of
an uninterrupted run of the same seed. The killed run is a real `python train.py` process,
paused at a known step (tests/tasks/kill_points.py) and SIGKILLed by the test; the straight
and the resumed runs are in-process (same thread count), so each method costs one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tasks.io.checkpoints import load_checkpoint
from tests.conftest import ROOT, read_summary, run_in_process
from tests.dery.conftest import stages, tiny_spec  # noqa: F401  (fixtures)
from tests.kf.conftest import digits_teacher, shrink  # noqa: F401  (fixture)
from tests.repfusion.conftest import stage1_overrides, teacher_dir  # noqa: F401  (fixture)

EPOCHS = 3
QUIET = [
    "trainer.num_sanity_val_steps=0",
    "logger=csv",
    "trainer.enable_model_summary=false",
    "trainer.deterministic=true",
    f"trainer.max_epochs={EPOCHS}",
]
SHORT = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


def _env() -> dict:
    threads = str(torch.get_num_threads())  # the in-process runs use this many: the same sums in the same order
    return {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }


def start_paused(args: list[str], marker: Path, log: Path) -> subprocess.Popen:
    """`python train.py <args>` that pauses at the second batch of the second epoch."""
    pause = [
        "+callbacks.pause._target_=tests.tasks.kill_points.PauseAt",
        "+callbacks.pause.epoch=1",
        "+callbacks.pause.batch=1",
        f"+callbacks.pause.marker={marker}",
    ]
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *args, *pause],
            cwd=ROOT,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def kill_when_paused(process: subprocess.Popen, marker: Path, log: Path, timeout: float = 600) -> str:
    """SIGKILL the process once it has reached its pause step; returns 'epoch batch step'."""
    deadline = time.time() + timeout
    while not marker.is_file():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before its pause step:\n{log.read_text()[-3000:]}")
        if time.time() > deadline:
            process.kill()
            pytest.fail("the run did not reach its pause step in time")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    return marker.read_text()


def kill_mid_epoch(overrides: list[str], run: Path, tmp_path: Path) -> None:
    """A real run of `overrides` into `run`, SIGKILLed after the first batch of epoch 2, with
    only the end-of-epoch-1 checkpoint on disk."""
    marker, log = tmp_path / "paused", tmp_path / "killed.log"
    process = start_paused([*overrides, f"hydra.run.dir={run}"], marker, log)
    epoch, batch, step = map(int, kill_when_paused(process, marker, log).split())
    assert (epoch, batch) == (1, 1) and not (run / "summary.json").exists()
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 0 and 0 < last["global_step"] < step  # epoch 2's first step never reached a checkpoint


def assert_same_run(resumed: dict, straight: dict, keys: tuple[str, ...]) -> None:
    assert resumed["global_step"] == straight["global_step"] and resumed["epochs"] == straight["epochs"] == EPOCHS
    assert resumed["test"] and resumed["test"] == straight["test"]
    for key in keys:
        assert resumed["final"][key] == straight["final"][key], key


def _check(overrides: list[str], tmp_path: Path, keys: tuple[str, ...]) -> tuple[dict, dict]:
    straight = run_in_process(overrides, tmp_path / "straight")
    kill_mid_epoch(overrides, tmp_path / "killed", tmp_path)
    resumed = run_in_process([*overrides, f"resume={tmp_path / 'killed'}"], tmp_path / "killed")
    assert_same_run(resumed, straight, keys)
    metrics = [(tmp_path / d / "metrics.csv").read_text() for d in ("straight", "killed")]
    assert metrics[0] == metrics[1]  # the epochs before the kill are kept, the replayed ones not doubled
    return straight, resumed


@pytest.mark.slow
def test_classifier_killed_mid_epoch_resumes_with_resume_auto(tmp_path):
    overrides = [
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "export=false",
        "model.backbone.name=resnet10t",
        *QUIET,
    ]
    straight = run_in_process(overrides, tmp_path / "straight")
    logs = tmp_path / "logs"
    marker, log = tmp_path / "paused", tmp_path / "killed.log"
    process = start_paused([*overrides, f"paths.log_dir={logs}"], marker, log)
    assert kill_when_paused(process, marker, log) == "1 1 4"  # epoch 2, batch 2, global step 4
    (run,) = (logs / "classify_digits" / "runs").iterdir()
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides, f"paths.log_dir={logs}", "resume=auto"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert [p.name for p in (logs / "classify_digits" / "runs").iterdir()] == [run.name]  # continued in place
    assert_same_run(read_summary(run), straight, ("val/acc", "val/loss", "val/acc_best", "train/loss"))
    assert (run / "metrics.csv").read_text() == (tmp_path / "straight" / "metrics.csv").read_text()


@pytest.mark.slow
def test_ddpm_teacher_killed_mid_epoch_resumes_exactly(tmp_path):
    overrides = [
        "experiment=ddpm_digits",
        "model.unet.block_out_channels=[8,16,16]",
        "model.num_samples=4",
        "model.sample_steps=2",
        "data.batch_size=16",
        *SHORT,
        "model.sample_every_n_epochs=10",
        *QUIET,
    ]
    straight, resumed = _check(overrides, tmp_path, ("val/loss", "train/loss"))
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.ckpt")["state_dict"] for d in ("straight", "killed"))
    assert all(torch.equal(v, b[k]) for k, v in a.items())  # U-Net and its EMA


@pytest.mark.slow
def test_repfusion_stage1_killed_mid_epoch_resumes_policy_ema_probe_and_histograms(teacher_dir, tmp_path):  # noqa: F811
    overrides = stage1_overrides(
        teacher_dir,
        *QUIET,
        "model.timesteps.baseline=mean",
        "model.timesteps.entropy_end_epoch=2",
        "model.timesteps.probe_norm=running",
        "trainer.limit_test_batches=2",
    )
    _check(overrides, tmp_path, ("train/loss", "train/loss_policy", "train/t_mean", "val/knn_acc", "val/loss_feat"))
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.ckpt") for d in ("straight", "killed"))
    assert a["repfusion_t_histograms"] == b["repfusion_t_histograms"] and len(a["repfusion_t_histograms"]) == EPOCHS
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())  # student, EMA, policy, probe
    per_epoch = [
        json.loads((tmp_path / d / "export" / "timesteps.json").read_text())["per_epoch"]
        for d in ("straight", "killed")
    ]
    assert per_epoch[0] == per_epoch[1]


@pytest.mark.slow
def test_kf_killed_mid_epoch_resumes_exactly(digits_teacher, tmp_path):  # noqa: F811
    overrides = [
        "experiment=kf_digits",
        f"model.teacher.source={digits_teacher}",
        *shrink("ckn"),
        *shrink("tsn", ("name", "channels", "stem_width")),
        *SHORT[:2],
        "trainer.limit_test_batches=2",
        "+data.eval_batch_size=32",
        "model.leakage=false",
        *QUIET,
    ]
    _check(overrides, tmp_path, ("val/loss", "train/loss"))


@pytest.mark.slow
def test_dery_training_killed_mid_epoch_resumes_exactly(tiny_spec, tmp_path):  # noqa: F811
    overrides = ["experiment=dery_digits", f"model.spec={tiny_spec}", "model.mode=full", *SHORT, "export=false", *QUIET]
    _check(overrides, tmp_path, ("val/loss", "val/acc"))


@pytest.mark.slow
def test_segmentation_killed_mid_epoch_resumes_exactly(tmp_path):
    overrides = [
        "experiment=seg_digits",
        "data.batch_size=8",
        "model.backbone.name=resnet10t",
        "model.head.fuse_channels=16",
        *SHORT,
        "export=false",
        *QUIET,
    ]
    _check(overrides, tmp_path, ("val/miou",))


@pytest.mark.slow
def test_landmarks_killed_mid_epoch_resumes_exactly(tmp_path):
    overrides = [
        "experiment=landmarks_shapes",
        "data.train_size=32",
        "data.val_size=8",
        "data.test_size=8",
        "data.batch_size=8",
        "model.backbone.name=resnet10t",
        "model.head.deconv_channels=[16,16,16]",
        *SHORT,
        "export=false",
        *QUIET,
    ]
    _check(overrides, tmp_path, ("val/nme",))


@pytest.mark.slow
def test_chain_killed_mid_stage_continues_with_dir(tmp_path):
    stage = [*SHORT, "export=false", "model.backbone.name=resnet10t", *QUIET]
    chain = tmp_path / "two.yaml"
    chain.write_text(
        "stages:\n  first:\n    experiment: classify_digits\n  second:\n    experiment: classify_digits\n"
        "    overrides: ['seed=7']\n    needs: [first]\ncompare:\n  metric: test/acc\n"
    )
    chain_dir, marker, log = tmp_path / "chain", tmp_path / "paused", tmp_path / "chain.log"
    pause = [
        "second:+callbacks.pause._target_=tests.tasks.kill_points.PauseAt",
        "second:+callbacks.pause.epoch=1",
        "second:+callbacks.pause.batch=1",
        f"second:+callbacks.pause.marker={marker}",
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tasks.chain", str(chain), "--dir", str(chain_dir), *stage, *pause],
            cwd=ROOT,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.time() + 900
    while not marker.is_file():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "the second stage never reached its pause step"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the chain runner and the stage it runs, as a kill -9 of the job would
    process.wait(timeout=60)
    assert read_summary(chain_dir / "first") and not (chain_dir / "second" / "summary.json").exists()
    again = subprocess.run(
        [sys.executable, "-m", "tasks.chain", str(chain), "--dir", str(chain_dir), *stage],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert again.stdout.count("already finished") == 1 and f"resume={chain_dir / 'second'}" in again.stdout
    straight = run_in_process(["experiment=classify_digits", "seed=7", *stage], tmp_path / "straight")
    assert_same_run(read_summary(chain_dir / "second"), straight, ("val/acc", "val/loss"))


@pytest.mark.parametrize("experiment", ["repfusion_digits", "repfusion_fashion", "repfusion_cifar10"])
def test_the_shipped_stage1_recipe_writes_a_checkpoint_every_epoch(tmp_path, experiment):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from tasks.run.instantiate import build
    from tests.conftest import compose_config

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    seen = []

    class Look(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append((tmp_path / "checkpoints" / "last.ckpt").is_file())

    checkpoint = build(
        "callbacks.model_checkpoint", compose_config([f"experiment={experiment}"], tmp_path).callbacks.model_checkpoint
    )
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[checkpoint, Look()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Tiny(), DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2))
    assert seen == [False, True]  # by the start of epoch 2 a checkpoint of epoch 1 is on disk
