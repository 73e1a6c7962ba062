"""Timing helpers shared by the benchmarks: interleaved repeats (so machine noise hits
both sides alike), medians, and a JSON record per benchmark in benchmarks/results/."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytorch_lightning as pl
import torch

RESULTS = Path(__file__).resolve().parent / "results"


class Measured(float):
    """Seconds that a candidate timed itself (e.g. the training steps of a Lightning fit,
    without the Trainer's one-time set-up); `seconds` takes them instead of the wall time."""


def seconds(fn: Callable[[], object], repeats: int = 1) -> float:
    """Wall time of `repeats` calls of fn, or the sum of what they returned if they returned
    `Measured` seconds."""
    total = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        total += out if isinstance(out, Measured) else time.perf_counter() - start
    return total


class _TrainLoopTimer(pl.Callback):
    """Seconds from the first training batch's fetch to the end of the last training step:
    the steps a plain loop over the same batches runs (epoch-end work is left out)."""

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds = time.perf_counter() - self.start


def fit_seconds(
    module: pl.LightningModule, datamodule: pl.LightningDataModule, steps: int, **trainer_kwargs
) -> Measured:
    """One epoch of `steps` training batches on the CPU under a fresh Trainer (no logger,
    checkpoints, bar or validation); returns the seconds of its training steps."""
    timer = _TrainLoopTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=datamodule)
    return Measured(timer.seconds)


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


def step_args(description: str) -> argparse.Namespace:
    """--steps and --rounds of the Lightning-against-plain-loop benchmarks; Lightning's info
    logs are silenced so that they do not interleave with the rounds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=19, help="training steps per round (19 = one digits epoch)")
    parser.add_argument("--rounds", type=int, default=5)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    return parser.parse_args()


def record(name: str, result: dict, path: Path | None = None) -> Path:
    """Write benchmarks/results/<name>.json (or `path`) with the machine it ran on, and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "when": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__,
        },
        **result,
    }
    path = Path(path) if path is not None else RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))
    return path
