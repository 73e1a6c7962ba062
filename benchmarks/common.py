"""Timing helpers shared by the benchmarks: interleaved repeats (so machine noise hits
both sides alike), medians, and a JSON record per benchmark in benchmarks/results/."""

from __future__ import annotations

import json
import platform
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def seconds(fn: Callable[[], object], repeats: int = 1) -> float:
    """Wall time of `repeats` calls of fn."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return time.perf_counter() - start


def side_by_side(candidates: dict[str, Callable[[], object]], rounds: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each candidate, alternating them round by round."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            times[name].append(seconds(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def record(name: str, result: dict) -> Path:
    """Write benchmarks/results/<name>.json with the machine it ran on, and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "when": datetime.now().isoformat(timespec="seconds"),
               "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                           "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                           "torch": torch.__version__},
               **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))
    return path
