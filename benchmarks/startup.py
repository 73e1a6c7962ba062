"""Whole-process cost of the framework against a plain PyTorch script doing the same work:
`python train.py experiment=classify_digits trainer.max_epochs=10 logger=csv` and
benchmarks/startup_plain.py (same data, network, optimiser, schedule, validation, test and
export), each run as its own process, alternating (the order flips every round, so drift on
the machine hits both alike). Records the median wall time and user+sys CPU time of each side,
the ratios framework/plain, every run's own numbers and test accuracy, and the load average
before and after: a busy machine shows there, and its numbers are not a measurement.

    python -m benchmarks.startup [--repeats 3] [--epochs 10]   # -> benchmarks/results/startup.json
    python -m benchmarks.startup --smoke                         # 1 epoch, 1 repeat: checks the harness only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, record

ROOT = Path(__file__).resolve().parents[1]


def commands(epochs: int, out: Path) -> dict[str, tuple[list[str], Path]]:
    """The two sides as a user types them (run from the repository root), each with the folder its
    summary.json goes to, under `out`."""
    return {
        "framework": (
            [
                "python",
                "train.py",
                "experiment=classify_digits",
                f"trainer.max_epochs={epochs}",
                "logger=csv",
                f"hydra.run.dir={out / 'framework'}",
            ],
            out / "framework",
        ),
        "plain": (
            ["python", "benchmarks/startup_plain.py", "--epochs", str(epochs), "--out", str(out / "plain")],
            out / "plain",
        ),
    }


def run_once(command: list[str], run_dir: Path) -> dict[str, float]:
    """One whole process: wall seconds, user+sys CPU seconds of it and its children, its test accuracy."""
    env = {**os.environ, "WANDB_MODE": "disabled", "KT_LOG_DIR": str(run_dir.parent / "logs"), "PYTHONUNBUFFERED": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *command[1:]], check=False, cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "test_acc": summary["test"]["test/acc"],
    }


def measure(epochs: int, repeats: int, warmup: int) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {"framework": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="kt-startup-") as tmp:
        for i in range(warmup + repeats):
            cmds = commands(epochs, Path(tmp) / f"round{i}")
            order = list(cmds) if i % 2 == 0 else list(cmds)[::-1]
            for side in order:
                timed = run_once(*cmds[side])
                print(
                    f"round {i + 1}/{warmup + repeats}{' (warm-up)' if i < warmup else ''}  {side:9s}  "
                    f"wall {timed['wall_s']:.2f} s  user+sys {timed['cpu_s']:.2f} s",
                    flush=True,
                )
                if i >= warmup:
                    runs[side].append(timed)
    return runs


def summarise(runs: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    medians = {
        f"{side}_{key}": statistics.median(r[key] for r in side_runs)
        for side, side_runs in runs.items()
        for key in ("wall_s", "cpu_s")
    }
    return {
        **medians,
        "ratio_wall": medians["framework_wall_s"] / medians["plain_wall_s"],
        "ratio_cpu": medians["framework_cpu_s"] / medians["plain_cpu_s"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds (each runs both sides once)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (file cache, imports)")
    parser.add_argument("--smoke", action="store_true", help="1 epoch, 1 repeat, no warm-up: checks the harness")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="where the JSON goes (default benchmarks/results/startup.json, startup_smoke.json with --smoke)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.repeats, args.warmup = 1, 1, 0
    name = "startup_smoke" if args.smoke else "startup"
    load_before = os.getloadavg()
    runs = measure(args.epochs, args.repeats, args.warmup)
    load_after = os.getloadavg()
    shown = {side: " ".join(cmd) for side, (cmd, _) in commands(args.epochs, Path("<tmp>")).items()}
    result = {
        "what": "whole-process wall and user+sys CPU seconds, median over the rounds; ratio = framework / plain",
        "commands": shown,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "smoke": args.smoke,
        **summarise(runs),
        "runs": runs,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    record(name, result, args.results or RESULTS / f"{name}.json")


if __name__ == "__main__":
    main()
