"""The frame of a method's non-training stages (DeRy's similarity, partition and search, RepFusion's
oracle and frozen evaluation) as Hydra apps: run dir from `hydra.run.dir`, one clear message for a
UserError (exit 2), and a summary.json that the chain runner (tasks.studies.chain) waits for."""

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
from tasks.run.summary import write_summary


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
