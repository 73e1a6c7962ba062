"""DeRy's non-training stages (similarity, partition, search) as Hydra apps: the shared frame
(tasks.run.stage_app.run_stage) and the check that an earlier stage's run dir is of the right kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.errors import UserError
from tasks.run.stage_app import run_stage
from tasks.run.summary import read_finished

__all__ = ["read_stage", "run_stage"]


def read_stage(run_dir: str | Path, stage: str, command: str) -> dict[str, Any]:
    """The summary of an earlier stage's run dir, or an error that says how to make it."""
    summary = read_finished(run_dir, f"{stage} run", f"Make one with: {command}")
    if summary.get("stage") != stage:
        kind = summary.get("stage") or "training"
        raise UserError(f"'{run_dir}' is a {kind} run, not a {stage} run. Make one with: {command}")
    return summary
