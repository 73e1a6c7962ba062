"""A chain under its three schedules, side by side in one call: fresh interpreters one at a time
(`--fresh --jobs 1`, how chains ran before), forked runs one at a time (`--jobs 1`), and forked
runs side by side (`--jobs <cores>`), all with the same thread count. It reports the chain's wall
time, each schedule's start-up seconds per run (process seconds less the run's own wall time,
from the chain's timing.json) and the ratios to the first, and checks that every run's
metrics.csv is the same under the three.

    python -m benchmarks.chain_runner                                  # a two-seed classify_digits chain
    python -m benchmarks.chain_runner --chain repfusion_digits --threads 1 --overrides '' \
        --skip-forked-serial --results benchmarks/results/chain_runner_make_train.json   # make train itself
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, record
from tasks.studies.chain import available_cores

ROOT = Path(__file__).resolve().parents[1]
SMALL = """stages:
  fit:
    experiment: classify_digits
    seeds: [1, 2]
  again:
    experiment: classify_digits
    overrides: ["model.backbone.init={run:fit}/export/model.safetensors"]
    seeds: [1, 2]
compare:
  metric: test/acc
"""
QUICK = (
    "trainer.max_epochs=1 trainer.limit_train_batches=4 trainer.limit_val_batches=1 trainer.limit_test_batches=1 "
    "trainer.num_sanity_val_steps=0"
)


def schedules(cores: int) -> dict[str, list[str]]:
    return {"fresh, one at a time": ["--fresh", "--jobs", "1"], "forked, one at a time": ["--jobs", "1"]} | {
        f"forked, {cores} side by side": ["--jobs", str(cores)]
    }


def run_chain(chain: str, flags: list[str], threads: int, overrides: list[str], chain_dir: Path) -> dict:
    command = [sys.executable, "-m", "tasks.chain", chain, "--dir", str(chain_dir), *flags, f"threads={threads}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    started = time.perf_counter()
    result = subprocess.run([*command, *overrides], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    timing = json.loads((chain_dir / "timing.json").read_text())
    startups = [r["startup_s"] for r in timing["runs"].values() if r["startup_s"] is not None]
    metrics = {k: (chain_dir / k / "metrics.csv").read_bytes() for k in timing["runs"]}
    return {
        "wall_s": wall,
        "runs": len(timing["runs"]),
        "startup_s_median": statistics.median(startups),
        "startup_s_sum": sum(startups),
        "metrics": metrics,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chain", default=None, help="a chain name or file (default: a two-seed classify_digits)")
    parser.add_argument("--threads", type=int, default=1, help="every run's thread count, under every schedule")
    parser.add_argument("--overrides", default=QUICK, help="chain-wide overrides, one string")
    parser.add_argument("--results", type=Path, default=RESULTS / "chain_runner.json")
    parser.add_argument(
        "--skip-forked-serial", action="store_true", help="only the first and the side-by-side schedules (long chains)"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="write the chain dirs here and keep them (their tables)"
    )
    args = parser.parse_args(argv)
    cores = available_cores()
    plan = schedules(cores)
    if args.skip_forked_serial:
        plan.pop("forked, one at a time")
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        chain = args.chain or str(Path(tmp) / "small.yaml")
        if args.chain is None:
            Path(chain).write_text(SMALL)
        measured = {
            name: run_chain(chain, flags, args.threads, shlex.split(args.overrides), Path(tmp) / f"c{i}")
            for i, (name, flags) in enumerate(plan.items())
        }
    first = next(iter(measured.values()))
    result = {
        "chain": args.chain or "two-seed classify_digits, fit then again (benchmarks/chain_runner.py)",
        "overrides": args.overrides,
        "threads_per_run": args.threads,
        "cores": cores,
        "load_average_at_end": os.getloadavg()[0],
        "schedules": {
            name: {k: v for k, v in m.items() if k != "metrics"}
            | {
                "wall_ratio": m["wall_s"] / first["wall_s"],
                "startup_ratio": m["startup_s_median"] / first["startup_s_median"],
                "same_metrics_csv": m["metrics"] == first["metrics"],
            }
            for name, m in measured.items()
        },
    }
    record("chain_runner", result, args.results)


if __name__ == "__main__":
    main()
