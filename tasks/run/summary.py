"""The run summary: test metrics, run dir, checkpoint and export paths, wall time. Printed
as a table and written to `summary.json`."""

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


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Atomically: summary.json marks a finished run (resume=auto and chains skip it)."""
    files.write_text(path, json.dumps(summary, indent=2, default=str))


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
