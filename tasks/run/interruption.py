"""How a command stops on SIGTERM, SIGINT or SIGHUP (what `scancel`, SLURM's preemption, a
container's shutdown, Ctrl-C and a closed terminal send). While a command runs (`watching()`),
the first such signal is recorded and raised as `Interrupted`, a KeyboardInterrupt, so every
library shuts down as on Ctrl-C; but when another handler has taken the signal over and calls
ours in turn (Lightning's during `fit`), that handler owns the graceful stop (Lightning's ends
the loop at the next batch) and ours only records it; a second signal then stops at once. Once
the stop is raised, further signals (a chain passing on the one its stage got too) are ignored,
so they cannot cut the clean-up short.

The guard (tasks.run.boundary) then writes an interrupted summary where the command has a run
dir and exits with 128 + the signal number, as a shell reports a process killed by it; a
scheduler, a chain or `afterok` never takes an interrupted run for a finished one. Signals that
were ignored when the command started (`nohup`, `&` in a script) stay ignored. `run_child` runs
a child command (a chain's stage, an oracle's run) and passes a stop on to it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_received: int | None = None
_deferred = False  # the first signal was left to a handler that chains to ours
_raised = False
_previous: dict[int, Any] = {}
_depth = 0


class Interrupted(KeyboardInterrupt):
    """A stop by signal `signum`, raised in the main thread."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, frame: Any) -> None:
    global _received, _deferred, _raised
    if _received is None:
        _received = signum
    if _raised:
        return  # the stop is under way: a repeated signal must not cut its clean-up short
    if signal.getsignal(signum) is not _on_signal and not _deferred:
        _deferred = True  # a handler that chains to ours (Lightning's) stops at its next safe point
        return
    _raised = True
    raise Interrupted(signum)


def received() -> int | None:
    """The first signal received since the outermost `watching()` began, if any."""
    return _received


def exit_code(signum: int) -> int:
    return 128 + int(signum)


def name(signum: int) -> str:
    return signal.Signals(signum).name


@contextlib.contextmanager
def watching() -> Iterator[None]:
    """Record (and raise) SIGTERM, SIGINT and SIGHUP for the duration of the block; nested
    blocks share the outermost one's record. Outside the main thread it does nothing."""
    global _depth, _received, _deferred, _raised
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        _received, _deferred, _raised = None, False, False
        for signum in SIGNALS:
            current = signal.getsignal(signum)
            if current is not signal.SIG_IGN:
                _previous[signum] = current
                signal.signal(signum, _on_signal)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            for signum, handler in _previous.items():
                if signal.getsignal(signum) is _on_signal:
                    signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            _previous.clear()


def _forget_in_child() -> None:
    """A forked child (tasks.studies.forkserver) starts unwatched, with its parent's original handlers:
    its own command's `watching()` installs ours again."""
    global _received, _deferred, _raised, _depth
    if threading.current_thread() is threading.main_thread():
        for signum, handler in _previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    _previous.clear()
    _received, _deferred, _raised, _depth = None, False, False, 0


os.register_at_fork(after_in_child=_forget_in_child)


def run_child(command: list[str], cwd: str | Path, grace_s: float = 300.0) -> int:
    """Run `command` (a stage of a chain, a run an oracle makes) and return its exit code. A stop
    of this process is passed on to the child, and the child's own interrupted summary awaited
    (a child that has not ended after `grace_s` is killed), before the stop goes on up."""
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        return process.wait()
    except BaseException as stop:
        process.send_signal(getattr(stop, "signum", signal.SIGTERM))
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
