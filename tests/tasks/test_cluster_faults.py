"""The faults a cluster produces, on real processes with real signals: SIGTERM and SIGINT in the
middle of an epoch (exit 128 + N, an interrupted summary that resume=auto, chains and reports
do not take for finished, and a resumed run that ends as an uninterrupted one), SLURM's requeue
signal under a simulated SLURM environment, two writers on one run dir or one chain dir, places
that cannot be written, a disk that fills up, and data that does not fit the network. The runs
are paused at a known batch (tests/tasks/kill_points.WaitForSignal) before the test signals
them; every process starts in its own session and is killed with it if a test fails."""

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
from tasks.run.resume import latest_unfinished_run, resumable_checkpoint
from tasks.run.summary import finished
from tests.conftest import ROOT, TINY, read_summary, run_in_process

EPOCHS = 3
RUN = [
    *TINY[1:],
    "trainer.deterministic=true",
    f"trainer.max_epochs={EPOCHS}",
    "export=false",
    "model.backbone.name=resnet10t",
]


def _env(extra: dict | None = None) -> dict:
    threads = str(torch.get_num_threads())  # as the in-process runs: the same sums in the same order
    return {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        **(extra or {}),
    }


def pause(marker: Path, prefix: str = "") -> list[str]:
    """Overrides that pause a run at the second batch of its second epoch until it gets a signal."""
    return [
        f"{prefix}+callbacks.pause._target_=tests.tasks.kill_points.WaitForSignal",
        f"{prefix}+callbacks.pause.epoch=1",
        f"{prefix}+callbacks.pause.batch=1",
        f"{prefix}+callbacks.pause.marker={marker}",
    ]


class Job:
    """A real command in its own session, its output in a log file."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None, module: str | None = None):
        entry = ["-m", module] if module else [str(ROOT / "train.py")]
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, *entry, *args],
                cwd=ROOT,
                env=_env(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.process.pid

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, marker: Path, timeout: float = 600) -> str:
        deadline = time.time() + timeout
        while not marker.is_file():
            if self.process.poll() is not None:
                pytest.fail(f"the run ended (exit {self.process.returncode}) before its pause:\n{self.text()[-3000:]}")
            if time.time() > deadline:
                pytest.fail("the run did not reach its pause in time")
            time.sleep(0.05)
        return marker.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 300) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=60)


@pytest.fixture
def jobs():
    started: list[Job] = []
    yield started
    for job in started:
        job.kill()


def command(args: list[str], env: dict | None = None, module: str | None = None, timeout: int = 600):
    entry = ["-m", module] if module else [str(ROOT / "train.py")]
    return subprocess.run(
        [sys.executable, *entry, *args], cwd=ROOT, env=_env(env), capture_output=True, text=True, timeout=timeout
    )


def only_run(logs: Path) -> Path:
    (run,) = (logs / "classify_digits" / "runs").iterdir()
    return run


def assert_same_run(resumed: dict, straight: dict) -> None:
    assert resumed["status"] == "finished"
    assert resumed["global_step"] == straight["global_step"] and resumed["epochs"] == straight["epochs"] == EPOCHS
    assert resumed["test"] and resumed["test"] == straight["test"]
    for key in ("val/acc", "val/loss", "train/loss"):
        assert resumed["final"][key] == straight["final"][key], key


def assert_not_taken_for_finished(run: Path) -> None:
    """resume=auto continues it, a chain does not skip it, a report leaves it out."""
    from tasks.studies.chain import StageRun
    from tasks.studies.report import find_summaries

    assert not finished(run) and latest_unfinished_run(run.parent) == run
    assert not StageRun("stage", None, run).finished
    assert find_summaries([run]) == []


# --- signals --------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_mid_epoch_exits_143_interrupted_and_resume_auto_ends_as_an_uninterrupted_run(tmp_path, jobs):
    straight = run_in_process(RUN, tmp_path / "straight")
    logs, marker = tmp_path / "logs", tmp_path / "paused"
    job = Job([*RUN, f"paths.log_dir={logs}", *pause(marker)], tmp_path / "stopped.log")
    jobs.append(job)
    assert job.wait_for(marker) == "1 1 3"  # epoch 2, batch 2, after global step 3
    job.signal(signal.SIGTERM)
    assert job.wait() == 128 + signal.SIGTERM, job.text()[-3000:]
    run = only_run(logs)
    summary = read_summary(run)
    assert (summary["status"], summary["signal"], summary["global_step"]) == ("interrupted", "SIGTERM", 4)
    assert summary["resumable"] == str(run / "checkpoints" / "last.ckpt")  # epoch 1's, the one resume takes
    assert "interrupted by SIGTERM (exit 143)" in job.text() and "Continue it with resume=auto" in job.text()
    assert_not_taken_for_finished(run)
    resumed = command([*RUN, f"paths.log_dir={logs}", "resume=auto"])
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert only_run(logs) == run  # continued in place
    assert_same_run(read_summary(run), straight)
    assert (run / "metrics.csv").read_text() == (tmp_path / "straight" / "metrics.csv").read_text()


@pytest.mark.slow
def test_sigint_mid_epoch_exits_130_interrupted_and_resume_auto_ends_as_an_uninterrupted_run(tmp_path, jobs):
    straight = run_in_process(RUN, tmp_path / "straight")
    logs, marker = tmp_path / "logs", tmp_path / "paused"
    job = Job([*RUN, f"paths.log_dir={logs}", *pause(marker)], tmp_path / "stopped.log")
    jobs.append(job)
    job.wait_for(marker)
    job.signal(signal.SIGINT)
    assert job.wait() == 128 + signal.SIGINT, job.text()[-3000:]
    run = only_run(logs)
    summary = read_summary(run)
    assert (summary["status"], summary["signal"], summary["global_step"]) == ("interrupted", "SIGINT", 3)
    assert "Traceback" not in job.text() and "interrupted by SIGINT (exit 130)" in job.text()
    assert_not_taken_for_finished(run)
    resumed = command([*RUN, f"paths.log_dir={logs}", "resume=auto"])
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert only_run(logs) == run
    assert_same_run(read_summary(run), straight)


@pytest.mark.slow
def test_slurm_requeue_signal_saves_a_checkpoint_requeues_and_resume_auto_continues_from_it(tmp_path, jobs):
    """SIGUSR1 (the launcher's --signal) under a simulated SLURM job: Lightning's SLURM environment
    saves hpc_ckpt_1.ckpt and calls `scontrol requeue <job id>` (a stub that records the call and,
    as SLURM does, stops the job with SIGTERM); the requeued job's resume=auto continues from it."""
    stubs, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    stubs.mkdir()
    (stubs / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nkill -TERM $PPID\n')
    (stubs / "scontrol").chmod(0o755)
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "kt-requeue-test",
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
    }
    logs, marker = tmp_path / "logs", tmp_path / "paused"
    job = Job([*RUN, f"paths.log_dir={logs}", *pause(marker)], tmp_path / "requeued.log", env=slurm)
    jobs.append(job)
    job.wait_for(marker)
    job.signal(signal.SIGUSR1)
    assert job.wait() == 128 + signal.SIGTERM, job.text()[-3000:]
    assert calls.read_text().splitlines() == ["requeue 4242"]
    run = only_run(logs)
    saved = run / "hpc_ckpt_1.ckpt"
    assert load_checkpoint(saved)["global_step"] == 3  # mid-epoch: newer than last.ckpt (step 2)
    # The job runs on until the stop reaches the loop: if its epoch ends with a better val/acc, the
    # epoch's checkpoint (last.ckpt, step 4) is newer than the requeue checkpoint, and resume takes it.
    last = run / "checkpoints" / "last.ckpt"
    newest = last if last.is_file() and load_checkpoint(last)["global_step"] > 3 else saved
    assert resumable_checkpoint(run) == newest and read_summary(run)["status"] == "interrupted"
    again = command([*RUN, f"paths.log_dir={logs}", "resume=auto"], env=slurm)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {newest}" in again.stdout + again.stderr
    summary = read_summary(only_run(logs))
    assert summary["status"] == "finished" and (summary["global_step"], summary["epochs"]) == (2 * EPOCHS, EPOCHS)
    assert calls.read_text().splitlines() == ["requeue 4242"]  # requeued once
    # Not compared with an uninterrupted run: Lightning restarts a plain DataLoader's epoch from its
    # first batch after a mid-epoch checkpoint (docs/faults.md); SIGTERM and kill -9 resume exactly.


# --- one writer per run dir -----------------------------------------------------------------
@pytest.mark.slow
def test_a_second_writer_stops_at_once_naming_the_dir_and_the_holder_and_a_dead_holders_lock_never_blocks(
    tmp_path, jobs
):
    logs, marker = tmp_path / "logs", tmp_path / "paused"
    holder = Job([*RUN, f"paths.log_dir={logs}", *pause(marker)], tmp_path / "holder.log")
    jobs.append(holder)
    holder.wait_for(marker)
    run = only_run(logs)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    second = command([*RUN, f"paths.log_dir={logs}", "resume=auto"])
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-3000:]
    assert f"Run dir {run} is in use: pid {holder.pid} on host " in second.stderr
    assert "resume=auto chose it as the newest unfinished run" in second.stderr and "Traceback" not in second.stderr
    third = command([*RUN, f"hydra.run.dir={run}"])
    assert third.returncode == 2 and f"Run dir {run} is in use: pid {holder.pid}" in third.stderr
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # neither wrote into it
    holder.kill()  # kill -9: its lock file stays behind, its lock does not
    assert json.loads((run / ".writer.lock").read_text())["pid"] == holder.pid
    fourth = command([*RUN, f"paths.log_dir={logs}", "resume=auto"])
    assert fourth.returncode == 0, fourth.stdout[-2000:] + fourth.stderr[-3000:]
    assert only_run(logs) == run and read_summary(run)["status"] == "finished"


@pytest.mark.slow
def test_a_chain_passes_sigterm_to_its_stage_and_a_second_runner_on_its_dir_stops(tmp_path, jobs):
    chain = tmp_path / "two.yaml"
    chain.write_text(
        "stages:\n  first:\n    experiment: classify_digits\n  second:\n    experiment: classify_digits\n"
        "    overrides: ['seed=7']\n    needs: [first]\ncompare:\n  metric: test/acc\n"
    )
    chain_dir, marker = tmp_path / "chain", tmp_path / "paused"
    runner = Job(
        [str(chain), "--dir", str(chain_dir), *RUN, *pause(marker, "second:")],
        tmp_path / "chain.log",
        module="tasks.chain",
    )
    jobs.append(runner)
    runner.wait_for(marker, timeout=900)
    other = command([str(chain), "--dir", str(chain_dir), *RUN], module="tasks.chain")
    assert other.returncode == 2, other.stdout[-2000:] + other.stderr[-3000:]
    assert f"Stage 'first' of chain dir {chain_dir} is in use: pid {runner.pid} on host " in other.stderr
    runner.signal(signal.SIGTERM)  # the runner only, as `kill <pid>` would
    assert runner.wait() == 128 + signal.SIGTERM, runner.text()[-3000:]
    assert finished(chain_dir / "first") and read_summary(chain_dir / "second")["status"] == "interrupted"
    assert "interrupted by SIGTERM (exit 143)" in runner.text()
    again = command([str(chain), "--dir", str(chain_dir), *RUN], module="tasks.chain", timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert again.stdout.count("already finished") == 1 and f"resume={chain_dir / 'second'}" in again.stdout
    assert finished(chain_dir / "second") and (chain_dir / "chain_summary.json").is_file()


# --- places that cannot be written, a full disk ---------------------------------------------
@pytest.mark.slow
def test_an_output_or_log_dir_that_cannot_be_created_is_one_user_error_before_anything_runs(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = command([*RUN, f"hydra.run.dir={blocker / 'run'}", f"paths.log_dir={tmp_path / 'logs'}"])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip() == (
        f"error: The run dir {blocker / 'run'} cannot be created: {blocker} is a text file, not a folder. "
        "Set hydra.run.dir=<a folder you can write>."
    )
    result = command([*RUN, f"paths.log_dir={blocker / 'logs'}"])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"error: The log dir {blocker / 'logs'} cannot be created: {blocker} is a text file" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing written anywhere


@pytest.mark.slow
def test_a_disk_that_fills_up_is_named_loses_nothing_and_leaves_no_partial_file(tmp_path):
    """Every write of the project's writers fails with ENOSPC from epoch 2 on (a fake write that
    stores 4 KB and then fails, as write(2) does on a full disk): the run stops with one message,
    epoch 1's checkpoint and the metrics stay whole, and resume=auto finishes the run later."""
    logs = tmp_path / "logs"
    full = ["+callbacks.full._target_=tests.tasks.faults.DiskFullFrom", "+callbacks.full.epoch=1"]
    result = command([*RUN, f"paths.log_dir={logs}", *full])
    run = only_run(logs)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"No space left on device while writing {run / 'checkpoints'}" in result.stderr
    assert "Nothing already written is lost" in result.stderr and "Traceback" not in result.stderr
    assert [p for p in run.rglob("*") if ".partial-" in p.name] == []
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2  # epoch 1's, whole
    assert (run / "metrics.csv").is_file() and not (run / "summary.json").exists()
    again = command([*RUN, f"paths.log_dir={logs}", "resume=auto"])
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert only_run(logs) == run and read_summary(run)["global_step"] == 2 * EPOCHS


# --- data that does not fit the network -----------------------------------------------------
@pytest.mark.slow
def test_an_image_size_the_network_was_not_built_for_names_both_sides_and_the_keys(tmp_path):
    result = command([*RUN, "model.backbone.name=vit_tiny_patch16_224", f"paths.log_dir={tmp_path / 'logs'}"])
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "this is a bug" not in result.stderr and "Traceback" not in result.stderr
    assert (
        "The data and the network disagree on the image size: the data gives 32x32 images but the network "
        "expects 224x224 (net.patch_embed: Input height (32) doesn't match model (224).). "
        "Make them agree: set +model.backbone.img_size=32 or data.image_size=224."
    ) in result.stderr
    assert list((tmp_path / "logs").rglob("*")) == []  # a failed start leaves no run dir
