"""The run summary: test metrics, run dir, checkpoint and export paths, wall time. Printed
as a table and written to `summary.json`. A finished run's summary has "status": "finished"
(older ones have no status and are finished too); a run stopped by a signal writes one with
"status": "interrupted", which resume=auto, chains, reports and every later stage treat as
not finished: `finished()` is the one test of that."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from tasks.io import files


def plain_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[key] = float(value)
    return dict(sorted(out.items()))


def checkpoint_paths(trainer) -> dict[str, str | None]:
    callback = trainer.checkpoint_callback
    if callback is None:
        return {"best": None, "last": None}
    last = Path(callback.dirpath or "") / "last.ckpt" if callback.dirpath else None
    return {
        "best": callback.best_model_path or None,
        "last": str(last) if last and last.is_file() else None,
        "best_score": float(callback.best_model_score) if callback.best_model_score is not None else None,
        "monitor": callback.monitor,
    }


FINISHED, INTERRUPTED = "finished", "interrupted"
SUMMARY = "summary.json"


def is_finished(summary: dict[str, Any]) -> bool:
    """A summary of a finished run (not an interrupted one)."""
    return summary.get("status", FINISHED) == FINISHED


def finished(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a finished run: a summary.json that does not say "interrupted"."""
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        return False
    try:
        return is_finished(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return False  # a damaged summary is not a finished run


def read_finished(run_dir: str | Path, what: str, fix: str) -> dict[str, Any]:
    """The summary of a finished run, or one UserError saying it is missing or was interrupted."""
    from tasks.errors import UserError

    path = Path(str(run_dir)).expanduser() / SUMMARY
    if not path.is_file():
        raise UserError(f"No finished {what} at '{run_dir}' ({path} is missing). {fix}")
    summary = files.read_json(path, f"The {what}'s summary", fix)
    if not is_finished(summary):
        raise UserError(
            f"The {what} at '{run_dir}' was interrupted ({summary.get('signal', 'a signal')} at "
            f"{summary.get('interrupted', '?')}) and has not finished. Continue it, or {fix[:1].lower()}{fix[1:]}"
        )
    return summary


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Atomically: summary.json with "status": "finished" marks a finished run (resume=auto and chains skip it)."""
    files.write_text(path, json.dumps({"status": FINISHED, **summary}, indent=2, default=str))


def write_interrupted(
    run_dir: str | Path, signum: int, details: dict[str, Any] | None = None, replace: bool = True
) -> Path | None:
    """summary.json of a run that signal `signum` stopped, unless the run had finished already (or,
    with replace=False, has any summary); None when none was written (the run dir is gone, the disk
    is full)."""
    import signal
    from datetime import datetime

    run_dir = Path(run_dir)
    path = run_dir / SUMMARY
    if not run_dir.is_dir() or finished(run_dir) or (path.exists() and not replace):
        return None
    summary = {
        "status": INTERRUPTED,
        "signal": signal.Signals(signum).name,
        "interrupted": datetime.now().isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
        **(details or {}),
    }
    try:
        files.write_text(path, json.dumps(summary, indent=2, default=str))
    except Exception:  # noqa: BLE001  (a full disk must not hide the interruption itself)
        return None
    return path


def print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"Summary: {summary.get('task_name')}", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in summary.get("test", {}).items():
        table.add_row(key, f"{value:.4f}")
    if not summary.get("test"):
        for key, value in summary.get("final", {}).items():
            if key.startswith(("val/", "train/")) and not key.endswith("_step"):
                table.add_row(key, f"{value:.4f}")
    table.add_row("run dir", str(summary["run_dir"]))
    for key, value in summary.get("checkpoints", {}).items():
        if key in ("best", "last") and value:
            table.add_row(f"checkpoint ({key})", str(value))
    for key, value in summary.get("export", {}).items():
        table.add_row(f"export ({key})", str(value))
    table.add_row("wall time", f"{summary['wall_time_s']:.1f} s")
    Console(width=max(100, Console().width)).print(table)
