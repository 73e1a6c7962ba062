"""The pieces behind the cluster-fault battery (tests/tasks/test_cluster_faults.py), in-process
and fast: the signal watch, the run-dir lock against a real second process, the check of the
places a command writes, the writers on a full disk, the one test of a finished run, the
requeue checkpoint resume picks, the translation of data/network mismatches (and the bugs it
leaves alone), and the SLURM launcher's requeue signal."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tasks.errors import DiskFull, RunDirLocked, UserError
from tasks.io import files
from tasks.run import interruption, lock
from tasks.run.boundary import run_guarded
from tests.conftest import CONF, ROOT, TINY, compose_config, run_in_process


# --- signals --------------------------------------------------------------------------------
def test_a_signal_while_watching_raises_interrupted_once_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(interruption.Interrupted) as stop:
        with interruption.watching():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
    assert stop.value.signum == signal.SIGTERM and interruption.received() == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_handler_that_chains_to_ours_owns_the_first_signal_and_a_second_stops_at_once():
    seen = []
    with interruption.watching():
        ours = signal.getsignal(signal.SIGTERM)

        def lightning_like(signum, frame):  # what Lightning's _HandlersCompose does during fit
            seen.append(signum)
            ours(signum, frame)

        signal.signal(signal.SIGTERM, lightning_like)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert seen == [signal.SIGTERM] and interruption.received() == signal.SIGTERM  # recorded, not raised
        with pytest.raises(interruption.Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        signal.signal(signal.SIGTERM, ours)


def test_a_signal_ignored_at_start_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with interruption.watching():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_the_guard_exits_128_plus_the_signal_and_writes_an_interrupted_summary(tmp_path, capsys):
    def body():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)

    with pytest.raises(SystemExit) as exit_:
        run_guarded("dery.similarity", body, run_dir=lambda: tmp_path)
    assert exit_.value.code == 130
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["signal"], summary["entry"]) == ("interrupted", "SIGINT", "dery.similarity")
    assert f"interrupted by SIGINT (exit 130): {tmp_path / 'summary.json'} says so" in capsys.readouterr().err


def test_an_interrupted_summary_never_replaces_a_finished_one(tmp_path):
    from tasks.run.summary import finished, write_interrupted, write_summary

    write_summary(tmp_path / "summary.json", {"task_name": "t"})
    assert write_interrupted(tmp_path, signal.SIGTERM) is None and finished(tmp_path)


# --- what counts as finished, what resume continues -----------------------------------------
@pytest.mark.parametrize(
    "text,done",
    [
        ('{"task_name": "t", "finished": "2025-01-01T00:00:00"}', True),  # written before summaries had a status
        ('{"status": "finished"}', True),
        ('{"status": "interrupted", "signal": "SIGTERM"}', False),
        ('{"status": "fini', False),
    ],
)
def test_one_test_of_a_finished_run(tmp_path, text, done):
    from tasks.run.summary import finished

    (tmp_path / "summary.json").write_text(text)
    assert finished(tmp_path) is done


def test_resume_takes_the_newest_of_last_ckpt_and_a_requeue_checkpoint(tmp_path):
    from tasks.run.resume import latest_unfinished_run, resume_checkpoint, resume_run_dir

    runs = tmp_path / "runs"
    done, stopped, requeued = (runs / n for n in ("done", "stopped", "requeued"))
    for run, age in ((done, 10), (stopped, 30), (requeued, 20)):
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
        os.utime(run / "checkpoints" / "last.ckpt", (time.time() - 100 * age, time.time() - 100 * age))
    (done / "summary.json").write_text('{"status": "finished"}')
    (stopped / "summary.json").write_text('{"status": "interrupted"}')
    (requeued / "hpc_ckpt_1.ckpt").write_bytes(b"x")  # newest of all, next to an older last.ckpt
    assert latest_unfinished_run(runs) == requeued
    assert resume_checkpoint("auto", requeued) == str(requeued / "hpc_ckpt_1.ckpt")
    assert resume_run_dir(str(requeued / "hpc_ckpt_1.ckpt"), runs) == requeued.resolve()
    (requeued / "hpc_ckpt_1.ckpt").unlink()
    assert latest_unfinished_run(runs) == requeued  # 2000 s old, the interrupted one 3000 s
    (requeued / "summary.json").write_text('{"status": "finished"}')
    assert latest_unfinished_run(runs) == stopped  # interrupted: not finished


def test_a_later_stage_refuses_an_interrupted_run_by_name(tmp_path):
    from dery.app import read_stage

    (tmp_path / "summary.json").write_text(
        '{"status": "interrupted", "signal": "SIGTERM", "interrupted": "2025-01-01T10:00:00", "stage": "similarity"}'
    )
    with pytest.raises(UserError) as err:
        read_stage(tmp_path, "similarity", "python -m dery.similarity")
    assert str(err.value) == (
        f"The similarity run at '{tmp_path}' was interrupted (SIGTERM at 2025-01-01T10:00:00) and has not "
        "finished. Continue it, or make one with: python -m dery.similarity"
    )


# --- one writer per run dir -----------------------------------------------------------------
HOLD = (
    "import sys; from tasks.run.lock import acquire; acquire(sys.argv[1], 'Run dir x', 'fix'); "
    "print('held', flush=True); sys.stdin.read()"
)


def _holder(lock_file: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_file)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_held_lock_stops_a_second_process_and_a_dead_holders_lock_never_blocks(tmp_path):
    run = tmp_path / "run"
    holder = _holder(run / lock.LOCK_FILE)
    try:
        with pytest.raises(RunDirLocked) as err:
            with lock.hold_run_dir(run):
                pass
        message = str(err.value)
        assert message.startswith(f"Run dir {run} is in use: pid {holder.pid} on host ")
        assert f"holds {run / lock.LOCK_FILE}. Two processes must not write into one run dir" in message
    finally:
        holder.kill()  # SIGKILL: no clean-up in the holder
        holder.wait()
    with lock.hold_run_dir(run):  # its file is still there; its lock is not
        assert json.loads((run / lock.LOCK_FILE).read_text())["pid"] == os.getpid()
        assert lock.holds(run / lock.LOCK_FILE)
    assert not lock.holds(run / lock.LOCK_FILE)


def test_the_lock_is_reentrant_in_one_process_and_released_with_the_outermost_hold(tmp_path):
    with lock.hold_run_dir(tmp_path):
        with lock.hold_run_dir(tmp_path):
            pass
        assert lock.holds(tmp_path / lock.LOCK_FILE)  # the inner release keeps the outer hold
        probe = subprocess.run(
            [sys.executable, "-c", HOLD, str(tmp_path / lock.LOCK_FILE)], cwd=ROOT, capture_output=True, text=True
        )
        assert probe.returncode == 1 and "RunDirLocked" in probe.stderr
    assert not lock.holds(tmp_path / lock.LOCK_FILE)


def test_only_rank_zero_takes_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP child Lightning started
    with lock.hold_run_dir(tmp_path):
        assert not (tmp_path / lock.LOCK_FILE).exists()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("SLURM_PROCID", "3")  # a SLURM task of another rank
    assert not lock.writes_here()


# --- places that cannot be written ----------------------------------------------------------
def test_a_place_under_a_file_or_a_broken_link_cannot_be_created(tmp_path):
    from tasks.io.places import require_writable

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError) as err:
        require_writable(blocker / "a" / "b", "The run dir", "Set hydra.run.dir=<a folder you can write>.")
    assert str(err.value) == (
        f"The run dir {blocker / 'a' / 'b'} cannot be created: {blocker} is a text file, not a folder. "
        "Set hydra.run.dir=<a folder you can write>."
    )
    with pytest.raises(UserError, match=rf"The run dir {blocker} is a text file, not a folder"):
        require_writable(blocker, "The run dir", "")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(UserError, match=r"cannot be created: .*link is a broken link"):
        require_writable(tmp_path / "link" / "x", "The cache dir", "")
    assert require_writable(tmp_path / "new" / "dir", "The run dir", "") == tmp_path / "new" / "dir"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link"]  # the probe left nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_folder_without_write_permission_is_named(tmp_path):
    from tasks.io.places import require_writable

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UserError, match=rf"The log dir {locked / 'logs'} cannot be created in {locked}: permission"):
        require_writable(locked / "logs", "The log dir", "")


def test_every_entry_point_names_a_place_it_cannot_write(tmp_path, capsys, monkeypatch):
    from kf.assemble import main as assemble
    from tasks.hub.push import main as push
    from tasks.run.launch import hydra_command
    from tasks.run.preflight import preflight
    from tasks.studies.chain import main as chain
    from tasks.studies.report import main as report

    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("KT_LOG_DIR", str(tmp_path / "logs"))

    def error(fn, *args) -> str:
        with pytest.raises(SystemExit) as exit_:
            fn(*args)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "Traceback" not in err, err
        return err

    import dery.similarity

    monkeypatch.setattr(sys, "argv", ["dery.similarity", "dery/zoo=tiny", f"cache_dir={blocker}/cache"])
    err = error(hydra_command, dery.similarity.main, "dery/similarity")
    assert f"The cache dir {blocker}/cache cannot be created: {blocker} is a text file" in err
    assert "Set cache_dir=<a folder you can write>." in err
    with pytest.raises(UserError, match=r"The wandb logger's dir .* cannot be created"):
        preflight(["train.py", "logger=many", f"logger.wandb.save_dir={blocker}/w"], CONF)
    with pytest.raises(UserError, match=rf"The sweep dir {blocker}/s cannot be created: .* Set hydra.sweep.dir="):
        preflight(["train.py", "-m", "seed=1,2", f"hydra.sweep.dir={blocker}/s"], CONF)
    with pytest.raises(UserError, match=rf"The run dir {blocker}/e cannot be created: .* Set hydra.run.dir="):
        preflight(["eval.py", f"ckpt={tmp_path}", f"hydra.run.dir={blocker}/e"], CONF, "eval")
    with pytest.raises(UserError, match=rf"The run dir {blocker}/o cannot be created"):
        preflight(["repfusion.oracle", "distill.grid=[]", f"hydra.run.dir={blocker}/o"], CONF, "repfusion/oracle")
    err = error(chain, ["dery_digits", "--dir", f"{blocker}/c"])
    assert f"The chain dir {blocker}/c cannot be created" in err and "Pass --dir <a folder you can write>" in err
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "summary.json").write_text('{"seed": 1, "test": {"test/acc": 0.5}}')
    err = error(report, [str(tmp_path / "runs"), "--out", f"{blocker}/report"])
    assert f"The report folder {blocker}/report cannot be created" in err
    err = error(assemble, [str(tmp_path / "none.json"), "--tasks", "a", "--out", f"{blocker}/o"])
    assert f"The --out folder {blocker}/o cannot be created" in err
    err = error(push, [str(tmp_path / "none"), "me/model", "--dry-run", "--out", f"{blocker}/o"])
    assert f"The --out folder {blocker}/o cannot be created" in err


# --- a full disk ----------------------------------------------------------------------------
def _full_disk(monkeypatch, room: int = 16) -> None:
    """The writers of tasks.io.files see a disk with `room` bytes left (tests/tasks/faults.FullDisk)."""
    from tests.tasks.faults import FullDisk

    def full_open(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        return FullDisk(handle, room) if "w" in mode else handle

    monkeypatch.setattr(files, "open", full_open, raising=False)


def test_a_write_that_runs_out_of_space_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, monkeypatch):
    from tasks.training.checkpointing import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    _full_disk(monkeypatch)
    with pytest.raises(DiskFull) as err:
        AtomicCheckpointIO().save_checkpoint({"step": 2, "w": torch.ones(1000)}, path)
    assert str(err.value).startswith(f"No space left on device while writing {path} (")
    assert "Nothing already written is lost: the previous last.ckpt is kept." in str(err.value)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    with pytest.raises(DiskFull, match="no partial file is left"):
        files.write_text(tmp_path / "summary.json", '{"status": "finished", "padding": "' + "x" * 100 + '"}')
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_library_that_runs_out_of_space_inside_an_export_leaves_no_export(tmp_path):
    from tasks.run.export import export_run

    class Exporter:  # what safetensors raises on a full disk (it wraps the OS error in its own type)
        def export_artifacts(self, folder: Path) -> dict:
            (folder / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(DiskFull, match=rf"No space left on device while writing {tmp_path / 'export'} "):
        export_run(Exporter(), tmp_path / "export", {"task_name": "t"})
    assert list(tmp_path.iterdir()) == []


def test_the_guard_names_a_full_disk_outside_the_writers_and_keeps_the_run_dir(tmp_path, capsys):
    (tmp_path / "metrics.csv").write_text("epoch\n0\n")

    def body():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.csv"))

    with pytest.raises(SystemExit) as exit_:
        run_guarded("train.py", body, run_dir=lambda: tmp_path)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"No space left on device while writing {tmp_path / 'metrics.csv'}" in err
    assert (tmp_path / "metrics.csv").is_file()  # a run that had started is not discarded

    def checkpoint_full():
        raise DiskFull("No space left on device while writing last.ckpt")

    with pytest.raises(SystemExit):
        run_guarded("train.py", checkpoint_full, run_dir=lambda: tmp_path)
    assert (tmp_path / "metrics.csv").is_file()


FILL_A_TMPFS = """
import sys
from pathlib import Path
import torch
from tasks.errors import DiskFull
from tasks.io import files
from tasks.training.checkpointing import AtomicCheckpointIO
disk = Path(sys.argv[1])
files.write_text(disk / "summary.json", "old")
for write in (lambda: files.write_text(disk / "summary.json", "x" * 1_000_000),
              lambda: AtomicCheckpointIO().save_checkpoint({"w": torch.ones(250_000)}, disk / "last.ckpt")):
    try:
        write()
    except DiskFull as err:
        print("error:", err)
print(sorted(p.name for p in disk.iterdir()), (disk / "summary.json").read_text())
"""


@pytest.mark.slow
def test_a_real_full_file_system_is_named_and_keeps_what_was_written(tmp_path):
    """A 64 KiB tmpfs, mounted in a user and mount namespace of its own (no one else sees it):
    the kernel's own ENOSPC, for a text file and for a checkpoint."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = 'mount -t tmpfs -o size=64k tmpfs "$1" && shift && exec "$@"'
    inner = [sys.executable, "-c", FILL_A_TMPFS, str(disk)]
    try:
        result = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(disk), *inner],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except FileNotFoundError:
        pytest.skip("no unshare here")
    if "mount" in result.stderr and result.returncode != 0 or "unshare" in result.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {result.stderr.strip()[:200]}")
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines[0].startswith(f"error: No space left on device while writing {disk / 'summary.json'} (")
    assert "MiB free of 0.1 MiB there). Nothing already written is lost: the previous summary.json is kept." in lines[0]
    assert lines[1].startswith(f"error: No space left on device while writing {disk / 'last.ckpt'} (")
    assert "no partial file is left" in lines[1]
    assert lines[2] == "['summary.json'] old"


# --- data that does not fit the network -----------------------------------------------------
def test_a_channel_count_the_network_does_not_take_names_both_sides_and_the_keys(tmp_path):
    with pytest.raises(UserError) as err:
        run_in_process([*TINY, "export=false", "model.backbone.name=resnet10t", "+model.backbone.in_chans=1"], tmp_path)
    assert str(err.value).startswith(
        "The data and the network disagree on the channel count: the data gives 3-channel images but the "
        "network's layer takes 1 (net.conv1.0: Given groups=1, weight of size [24, 1, 3, 3], expected input"
    )
    assert str(err.value).endswith("Make them agree: set model.backbone.in_chans=3.")


class _Data:
    image_size, num_classes, mean = 32, 20, (0.5, 0.5, 0.5)


class _Net(torch.nn.Module):
    def __init__(self, in_chans: int = 3):
        super().__init__()
        self.stem = torch.nn.Conv2d(in_chans, 8, 3)
        self.body = torch.nn.Conv2d(16, 8, 3)  # wrong on purpose: a bug, not a data mistake
        self.hparams = {"num_classes": 10}

    def forward(self, x):
        return self.body(self.stem(x))


def _failure(fn) -> BaseException:
    try:
        fn()
    except Exception as err:  # noqa: BLE001
        return err
    raise AssertionError("no failure")


def test_a_shape_error_that_is_not_a_data_mismatch_stays_a_bug():
    from tasks.run.mismatch import explain

    net = _Net()
    bug = _failure(lambda: net(torch.zeros(2, 3, 32, 32)))  # inside: 8 channels into a 16-channel layer
    assert "to have 16 channels, but got 8 channels" in str(bug) and explain(bug, _Data(), net) is None
    size = AssertionError("Input height (32) doesn't match model (32).")  # the same size: no disagreement
    assert explain(size, _Data(), net) is None
    other = AssertionError("Input height (64) doesn't match model (224).")  # not the data's size
    assert explain(other, _Data(), net) is None


def test_more_classes_in_the_data_than_the_network_predicts_is_named():
    from tasks.run.mismatch import explain

    cfg = compose_config(["experiment=classify_digits"])
    err = explain(IndexError("Target 12 is out of bounds."), _Data(), _Net(), cfg)
    assert str(err) == (
        "The data has 20 classes but the network predicts 10 (Target 12 is out of bounds.). Set model.num_classes=20."
    )
    fewer = type("Few", (), {"image_size": 32, "num_classes": 5, "mean": (0.5,) * 3})()
    assert explain(IndexError("Target 12 is out of bounds."), fewer, _Net(), cfg) is None


# --- the SLURM launcher ---------------------------------------------------------------------
def test_the_slurm_launcher_asks_for_lightnings_requeue_signal():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import _make_sbatch_string

    launcher = OmegaConf.load(CONF / "hydra" / "launcher" / "slurm.yaml")
    text = _make_sbatch_string(
        command="python train.py", folder="/tmp/x", additional_parameters=dict(launcher.additional_parameters)
    )
    assert "#SBATCH --signal=USR1@120" in text.splitlines() and "#SBATCH --requeue" in text.splitlines()
    assert "USR2" not in text  # submitit's own signal, which would not reach Lightning's handler
