"""Imports paid once: a chain imports torch, Lightning, timm, diffusers and wandb once, then forks
one child per stage run (`python -m <module> <overrides>` run by runpy in the child), in place of
a fresh interpreter that would import them all again (seconds per run). Each child is still its
own process: its own log, exit code and crash; a killed child takes only itself down; it runs the
same guarded command with the same checks as `python -m <module>` would.

Fork is safe only while the parent runs no threads of its own: no Python thread, and torch's
thread pools not started (the parent imports and checks configs, it never runs a tensor op). The
BLAS libraries' worker threads re-create themselves in a child (they register fork handlers).
Where that does not hold, or the command is not `python -m <module>`, a fresh interpreter runs it.
Per-process state of the shared layer (the signal watch, the start clock, held locks) is reset in
the child by the fork handlers those modules register (os.register_at_fork)."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import runpy
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from tasks.studies.scheduler import popen

# What a stage run imports that costs seconds: imported once, in the parent.
PRELOAD = (
    "torch",
    "torchvision",
    "pytorch_lightning",
    "timm",
    "diffusers",
    "wandb",
    "sklearn.datasets",
    "rich",
    "hydra",
    "tasks.train",
    "tasks.eval",
    "tasks.run.instantiate",
    "tasks.run.export",
    "tasks.run.summary",
    "tasks.io.cards",
    "tasks.io.checkpoints",
)


def preload(modules: tuple[str, ...] | list[str] = PRELOAD) -> list[str]:
    """Import what is installed of `modules` (a missing optional package is skipped); returns those imported."""
    done = []
    for name in modules:
        top = name.partition(".")[0]
        if importlib.util.find_spec(top) is None:
            continue
        importlib.import_module(name)
        done.append(name)
    return done


def forkable(command: list[str]) -> bool:
    """A `python -m <module>` command of this interpreter, while this process runs no other thread."""
    return (
        len(command) > 2
        and command[0] == sys.executable
        and command[1] == "-m"
        and threading.active_count() == 1
        and threading.current_thread() is threading.main_thread()
    )


class Forked:
    """A forked child, with the part of subprocess.Popen's interface the scheduler uses."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)  # -N: killed by signal N, as Popen says
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode


def launch(command: list[str], cwd: Path, env: dict[str, str], log: Path | None) -> Forked | subprocess.Popen:
    """Start `command` as a forked child (in this process group, so a kill of the chain's job reaches
    it), else as a fresh interpreter."""
    if not forkable(command):
        return popen(command, cwd, env, log, own_group=False)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os._exit(run_child(command, cwd, env, log))
    return Forked(pid)


def run_child(command: list[str], cwd: Path, env: dict[str, str], log: Path | None) -> int:
    """In the forked child: become `python -m <module> <args>` in `cwd` with `env`; returns its exit code."""
    code = 1
    try:
        os.chdir(cwd)
        if str(cwd) not in sys.path:
            sys.path.insert(0, str(cwd))  # as `python -m` puts the working folder first
        os.environ.clear()
        os.environ.update(env)
        if log is not None:
            descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(descriptor, 1)
            os.dup2(descriptor, 2)
            os.close(descriptor)
        sys.stdout.reconfigure(line_buffering=True)
        threads = env.get("OMP_NUM_THREADS")
        if threads and threads.isdigit() and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))  # torch read OMP_NUM_THREADS in the parent
        sys.argv = [command[2], *command[3:]]
        runpy.run_module(command[2], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # a closed stream must not turn a finished run into a crash
            pass
    return code
