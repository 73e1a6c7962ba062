"""The last-resort guard of every command a user types. A UserError prints one message and
exits 2; any other exception is a bug: one line says so and names the log file that holds
its full traceback, exit 1. A start that fails on a user mistake leaves no run dir behind.

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

from tasks.errors import EXIT_BUG, EXIT_USER, TrainingDiverged, UserError

_STARTED = time.time()  # files older than this were not written by this process


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
    failed start discards."""
    try:
        return body(*args, **kwargs)
    except UserError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        if run_dir is not None and not isinstance(err, TrainingDiverged):
            discard_fresh_run_dir(run_dir())
        sys.exit(EXIT_USER)
    except SystemExit as exit_:
        if isinstance(exit_.code, str):  # argparse-style `raise SystemExit("error: ...")`: a user error
            print(exit_.code, file=sys.stderr)
            exit_ = SystemExit(EXIT_USER)
        if exit_.code == EXIT_USER and run_dir is not None:  # a user error the app reported itself
            discard_fresh_run_dir(run_dir())
        raise exit_ from None
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        report_bug(entry, err)
        sys.exit(EXIT_BUG)


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
