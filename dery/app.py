"""The frame of DeRy's non-training stages (similarity, partition, search) as Hydra apps:
run dir from `hydra.run.dir`, one clear message for a UserError (exit 2), and a
summary.json that the chain runner (tasks.studies.chain) waits for."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from tasks.errors import UserError
from tasks.run.summary import read_finished, write_summary


def run_stage(stage: str, cfg: DictConfig, body: Callable[[DictConfig, Path], dict[str, Any]]) -> dict[str, Any]:
    """Run `body(cfg, run_dir)` and write its result, with timing, as run_dir/summary.json."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    out = Path(hydra_cfg.runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    torch.manual_seed(cfg.get("seed") or 0)
    try:
        result = body(cfg, out)
    except UserError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        sys.exit(2)
    summary = {
        "task_name": cfg.task_name,
        "stage": stage,
        "run_dir": str(out),
        "seed": cfg.get("seed"),
        "overrides": list(hydra_cfg.overrides.task),
        **result,
        "wall_time_s": time.time() - start,
        "finished": datetime.now().isoformat(timespec="seconds"),
    }
    write_summary(out / "summary.json", summary)
    print(f"{stage} done in {summary['wall_time_s']:.1f} s: {out}")
    return summary


def read_stage(run_dir: str | Path, stage: str, command: str) -> dict[str, Any]:
    """The summary of an earlier stage's run dir, or an error that says how to make it."""
    summary = read_finished(run_dir, f"{stage} run", f"Make one with: {command}")
    if summary.get("stage") != stage:
        kind = summary.get("stage") or "training"
        raise UserError(f"'{run_dir}' is a {kind} run, not a {stage} run. Make one with: {command}")
    return summary
