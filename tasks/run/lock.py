"""One writer per run dir. A process that writes into a run dir (or runs a stage of a chain dir)
holds an exclusive fcntl lock on a file inside it for as long as it runs; the file records who
holds it (pid, host, start time, command). The operating system drops the lock when the process
ends, however it ends (kill -9 included), so a lock file left by a dead process never blocks.
A second writer stops at once with one message naming the dir and the holder.

POSIX (fcntl) locks belong to a process and also work over NFS; a process drops its lock when it
closes any descriptor of the file, so this module opens each lock file once per process and
counts nested holds. Only rank 0 of a multi-process job (DDP, SLURM tasks) takes the lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from tasks.errors import RunDirLocked

LOCK_FILE = ".writer.lock"
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
_held: dict[str, list[int]] = {}  # real path of a lock file -> [descriptor, nested holds]
# fcntl locks are not inherited: a forked child (tasks.studies.forkserver) holds none of its parent's.
os.register_at_fork(after_in_child=_held.clear)


def writes_here() -> bool:
    """Whether this process writes run dirs: rank 0 of a multi-process job (or a plain process)."""
    return all(os.environ.get(var) in (None, "", "0") for var in _RANK_VARIABLES)


def holder_text(lock_file: Path, wait_s: float = 1.0) -> str:
    """Who holds `lock_file`, in words, from what the holder wrote into it (it writes right after
    it takes the lock, so an empty file is read again for a moment)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = json.loads(Path(lock_file).read_text(encoding="utf-8"))
            break
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                return "another process (it has not written its name into the lock file yet)"
            time.sleep(0.05)
    command = str(info.get("command", ""))
    command = command if len(command) <= 160 else command[:157] + "..."
    return f"pid {info.get('pid')} on host {info.get('host')} (running since {info.get('since')}: `{command}`)"


def acquire(lock_file: str | Path, what: str, fix: str) -> None:
    """Take the lock of `lock_file` for this process, or raise RunDirLocked naming `what` and the holder."""
    lock_file = Path(lock_file)
    key = os.path.realpath(lock_file)
    if key in _held:
        _held[key][1] += 1
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(descriptor)
        if err.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        raise RunDirLocked(f"{what} is in use: {holder_text(lock_file)} holds {lock_file}. {fix}") from None
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
    }
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(record).encode(), 0)
    _held[key] = [descriptor, 1]


def release(lock_file: str | Path) -> None:
    key = os.path.realpath(lock_file)
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        os.close(entry[0])  # the lock goes with the descriptor


@contextlib.contextmanager
def holding(lock_file: str | Path, what: str, fix: str) -> Iterator[None]:
    acquire(lock_file, what, fix)
    try:
        yield
    finally:
        release(lock_file)


def hold_run_dir(run_dir: str | Path, fix: str = "") -> contextlib.AbstractContextManager:
    """The lock of a run dir for the block (no-op on ranks other than 0)."""
    if not writes_here():
        return contextlib.nullcontext()
    run_dir = Path(run_dir)
    fix = fix or (
        "Two processes must not write into one run dir: wait for that one to end (or stop it), "
        "or start a new run without hydra.run.dir=/resume=."
    )
    return holding(run_dir / LOCK_FILE, f"Run dir {run_dir}", fix)


def holds(lock_file: str | Path) -> bool:
    """Whether this process holds `lock_file`."""
    return os.path.realpath(lock_file) in _held
