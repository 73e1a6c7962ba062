"""The last-resort guard of every command a user types. A UserError prints one message and
exits 2; any other exception is a bug: one line says so and names the log file that holds
its full traceback, exit 1. A start that fails on a user mistake leaves no run dir behind.
A write that fails for lack of space is a user error too (exit 2; the run dir is kept). A
command stopped by SIGTERM, SIGINT or SIGHUP exits 128 + the signal number, and its run dir,
if it has one, gets an interrupted summary (tasks.run.interruption).

    @guarded("kt-report")                      # an argparse command
    def main(argv=None): ...

    if __name__ == "__main__":
        hydra_command(main, "dery/similarity")  # a Hydra app (tasks.run.launch): checks first, then runs guarded
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from tasks.errors import EXIT_BUG, EXIT_USER, DiskFull, RunDirLocked, TrainingDiverged, UserError
from tasks.run import interruption

KEEPS_RUN_DIR = (TrainingDiverged, DiskFull, RunDirLocked)  # a run that started, or another process's dir

_STARTED = time.time()  # files older than this were not written by this process


def _restart_clock() -> None:
    global _STARTED
    _STARTED = time.time()


os.register_at_fork(after_in_child=_restart_clock)  # a forked stage run (tasks.studies.forkserver) is a new process


def _hydra_log_file() -> Path | None:
    """The job log of the running Hydra app (its run dir's <task_name>.log), if any."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        handler = HydraConfig.get().job_logging.get("handlers", {}).get("file", {})
        name = handler.get("filename") if handler else None
        return Path(str(name)) if name else None
    except Exception:  # no Hydra, or a config without a file handler
        return None


def bug_log(entry: str, err: BaseException) -> Path:
    """Append the traceback of `err` to the run's log (or logs/errors/<entry>-<time>.log)."""
    text = f"\n=== {datetime.now().isoformat(timespec='seconds')} {entry}: unexpected {type(err).__name__}\n" + "".join(
        traceback.format_exception(type(err), err, err.__traceback__)
    )
    name = f"{entry}-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    candidates = [
        _hydra_log_file(),
        Path(os.environ.get("KT_LOG_DIR", "logs")) / "errors" / name,
        Path("/tmp") / f"kt-{entry}-{os.getpid()}.log",
    ]
    for path in candidates:
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(text)
            return path.resolve()
        except OSError:
            continue
    return Path("<no writable log>")


def report_bug(entry: str, err: BaseException) -> None:
    path = bug_log(entry, err)
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    cause = f"{type(err).__name__}{': ' + first if first else ''}"
    print(
        f"error: this is a bug in {entry}, not a mistake of yours ({cause}). "
        f"The full traceback is in {path}; please report it with that file.",
        file=sys.stderr,
    )


def discard_fresh_run_dir(run_dir: str | Path | None) -> bool:
    """Remove `run_dir` when everything in it was written by this process and it holds no
    checkpoint: a failed start must leave nothing that `resume=auto` or a chain picks up."""
    if run_dir is None:
        return False
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    files = [p for p in run_dir.rglob("*") if p.is_file() or p.is_symlink()]
    if any(p.suffix == ".ckpt" or p.name == "summary.json" for p in files):
        return False
    if any(p.lstat().st_mtime < _STARTED - 1.0 for p in files):
        return False  # an older run (e.g. resumed): not ours to remove
    _detach_log_files(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in (run_dir.parent, run_dir.parent.parent):  # logs/<task>/runs and logs/<task>, if now empty
        try:
            parent.rmdir()
        except OSError:
            break
    return True


def _detach_log_files(run_dir: Path) -> None:
    """Close the logging handlers that write into `run_dir` (Hydra's job log): once the dir is
    gone, a later record in this process (a notebook, the tests) would try to reopen the file."""
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    root = run_dir.resolve()
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve().is_relative_to(root):
                logger.removeHandler(handler)
                handler.close()


def run_guarded(
    entry: str, body: Callable[..., Any], *args: Any, run_dir: Callable[[], Path | None] | None = None, **kwargs: Any
) -> Any:
    """`body(*args, **kwargs)` with the exit-code contract; `run_dir()` names the dir a
    failed start discards and an interrupted run gets its summary in."""
    try:
        with interruption.watching():
            return body(*args, **kwargs)
    except BaseException as err:  # noqa: BLE001  (the guard: every way out is decided here)
        signum = interruption.received()
        if signum is not None:
            stop_interrupted(entry, signum, err, run_dir() if run_dir is not None else None)
        exit_for(entry, err, run_dir)


def exit_for(entry: str, err: BaseException, run_dir: Callable[[], Path | None] | None) -> None:
    """The exit of a command that raised `err` (no signal involved)."""
    if isinstance(err, UserError):
        print(f"\nerror: {err}", file=sys.stderr)
        if run_dir is not None and not isinstance(err, KEEPS_RUN_DIR):
            discard_fresh_run_dir(run_dir())
        sys.exit(EXIT_USER)
    if isinstance(err, SystemExit):
        if isinstance(err.code, str):  # argparse-style `raise SystemExit("error: ...")`: a user error
            print(err.code, file=sys.stderr)
            err = SystemExit(EXIT_USER)
        if err.code == EXIT_USER and run_dir is not None:  # a user error the app reported itself
            discard_fresh_run_dir(run_dir())
        raise err from None
    if isinstance(err, KeyboardInterrupt):
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)  # 128 + SIGINT, as a shell reports Ctrl-C
    if isinstance(err, Exception):
        from tasks.io.files import disk_full, no_space

        if no_space(err):  # a writer outside tasks.io.files (a logger, a library) ran out of space
            print(f"\nerror: {disk_full(None, err)}", file=sys.stderr)
            sys.exit(EXIT_USER)
        report_bug(entry, err)
        sys.exit(EXIT_BUG)
    raise err


def stop_interrupted(entry: str, signum: int, err: BaseException, run_dir: Path | None) -> None:
    """Exit 128 + signum after a stop by signal. The run dir (if any) gets an interrupted summary
    unless the body wrote one (train.py writes its step and checkpoints) or had finished."""
    import json

    from tasks.run.lock import writes_here
    from tasks.run.summary import INTERRUPTED, SUMMARY, write_interrupted

    code = interruption.exit_code(signum)
    if isinstance(err, SystemExit) and err.code == code:
        raise err  # an inner guard has reported it
    said = ""
    if run_dir is not None and writes_here():
        write_interrupted(run_dir, signum, {"entry": entry}, replace=False)
        try:
            summary = json.loads((Path(run_dir) / SUMMARY).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
        if summary.get("status") == INTERRUPTED:
            said = f": {Path(run_dir) / SUMMARY} says so"
            said += f". {summary['continue']}" if "continue" in summary else ""
    print(f"\ninterrupted by {interruption.name(signum)} (exit {code}){said}", file=sys.stderr)
    sys.exit(code)


def guarded(entry: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form of `run_guarded` for argparse commands."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            return run_guarded(entry, fn, *args, **kwargs)

        return inner

    return wrap


def hydra_output_dir() -> Path | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    except Exception:
        return None
