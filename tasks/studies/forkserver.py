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
import json
import logging
import os
import runpy
import signal
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
    """A `python -m <module>` or `python <script>.py` command of this interpreter, while this process
    runs no other thread."""
    return (
        len(command) > 1
        and command[0] == sys.executable
        and ((command[1] == "-m" and len(command) > 2) or command[1].endswith(".py"))
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


def run_child(command: list[str], cwd: Path, env: dict[str, str], log: Path | None, errors: Path | None = None) -> int:
    """In the forked child: become `python -m <module> <args>` (or `python <script> <args>`) in `cwd`
    with `env`, its output to `log` (its errors to `errors` when given); returns its exit code."""
    code = 1
    try:
        os.chdir(cwd)
        script = command[1] != "-m"
        first = str(Path(command[1]).resolve().parent) if script else str(cwd)
        if first not in sys.path[:1]:
            sys.path.insert(0, first)  # as Python puts the script's folder, or with -m the working folder, first
        os.environ.clear()
        os.environ.update(env)
        for stream, path in ((1, log), (2, errors or log)):
            if path is not None:
                descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.dup2(descriptor, stream)
                os.close(descriptor)
        sys.stdout.reconfigure(line_buffering=True)
        threads = env.get("OMP_NUM_THREADS")
        if threads and threads.isdigit() and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))  # torch read OMP_NUM_THREADS in the parent
        if script:
            sys.argv = list(command[1:])
            runpy.run_path(command[1], run_name="__main__")
        else:
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


def serve() -> None:
    """`python -m tasks.studies.forkserver`: a server of forked runs for a caller that cannot fork
    safely itself (a test process that has run torch): it imports the libraries once, then for each
    JSON request line on stdin `{"command", "cwd", "env", "stdout", "stderr"}` forks the run, answers
    `{"pid": ...}`, then `{"code": ...}` once it ends. One run at a time; it ends at the end of stdin."""
    preload()
    for line in sys.stdin:
        request = json.loads(line)
        command = list(request["command"])
        if not forkable(command):
            answer({"error": f"not a python -m <module> or python <script>.py command: {command}"})
            continue
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            stdin = os.open(os.devnull, os.O_RDONLY)  # the requests are the server's, not the run's
            os.dup2(stdin, 0)
            sys.stdin = open(os.devnull)  # noqa: SIM115  (the child's stdin until it exits)
            paths = (Path(request["stdout"]), Path(request["stderr"]))
            os._exit(run_child(command, Path(request["cwd"]), dict(request["env"]), *paths))
        answer({"pid": pid})
        answer({"code": Forked(pid).wait()})


class Server:
    """The caller's side of `python -m tasks.studies.forkserver`, started on the first run."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.cwd, self.env = cwd, env
        self.process: subprocess.Popen | None = None

    def _read(self, timeout: float | None) -> dict | None:
        import select

        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.process.stdout.readline()  # unbuffered: never reads past this answer
        if not line:
            raise RuntimeError(f"the fork server ended (exit code {self.process.wait()})")
        return json.loads(line)

    def run(
        self, command: list[str], cwd: Path, env: dict[str, str], timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        """What subprocess.run(command, capture_output=True, text=True, timeout=...) returns, from a forked run."""
        import tempfile

        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tasks.studies.forkserver"],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,
            )
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"command": command, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            started = self._read(None)
            if "error" in started:
                raise ValueError(started["error"])
            done = self._read(timeout)
            if done is None:
                os.kill(started["pid"], signal.SIGKILL)
                self._read(None)
                raise subprocess.TimeoutExpired(command, timeout)
            text = [p.read_text(errors="replace") if p.is_file() else "" for p in (out, err)]
        return subprocess.CompletedProcess(command, done["code"], text[0], text[1])

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


def answer(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    serve()
