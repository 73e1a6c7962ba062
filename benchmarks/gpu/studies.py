"""The GPU route: run the Fashion-MNIST anchor and every method's study on one lent GPU,
then measure each method's training throughput (images/s, achieved TFLOP/s against the
bf16 peak) at the recipe's batch size and at the largest that fits, and write one report.

    python -m benchmarks.gpu.studies --out $OUT                 # on the GPU machine (benchmarks/gpu/run.sh)
    python -m benchmarks.gpu.studies --smoke --out /tmp/smoke   # the same steps on the CPU, tiny subsets

Writes into --out: gpu_report.md (tables), gpu_summary.json (every summary.json and
throughput record), and the chains' report pictures."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.gpu import throughput

ROOT = Path(__file__).resolve().parents[2]
PLAN = Path(__file__).with_name("plan.yaml")


def command(name: str, spec: dict, overrides: list[str], run_dir: Path) -> list[str]:
    if "experiment" in spec:
        return [sys.executable, str(ROOT / "train.py"), f"experiment={spec['experiment']}", *overrides,
                f"hydra.run.dir={run_dir}"]
    return [sys.executable, "-m", "tasks.chain", spec["chain"], *overrides, "--dir", str(run_dir)]


def run_step(name: str, spec: dict, overrides: list[str], logs: Path) -> dict:
    run_dir = logs / name
    started = time.time()
    cmd = command(name, spec, overrides, run_dir)
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    code = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    record = {"name": name, "command": " ".join(cmd[1:]), "exit_code": code, "wall_s": time.time() - started,
              "run_dir": str(run_dir)}
    summary = run_dir / ("summary.json" if "experiment" in spec else "chain_summary.json")
    if summary.is_file():
        record["summary"] = json.loads(summary.read_text())
    return record


def representative_run(record: dict, spec: dict) -> Path | None:
    """The run whose recipe is timed: the experiment itself, or the chain stage the plan names."""
    if "experiment" in spec:
        return Path(record["run_dir"])
    stage = spec.get("throughput_stage")
    stages = record.get("summary", {}).get("stages", {})
    match = next((path for key, path in stages.items() if key == stage or key.startswith(f"{stage}/")), None)
    return Path(match) if match else None


def report_lines(records: list[dict], smoke: bool) -> list[str]:
    where = "CPU smoke mode (tiny subsets: the numbers check the route, they measure nothing)" if smoke \
        else f"GPU: {torch_device_name()}"
    lines = [f"# GPU route report ({where})", "", "| run | exit | wall (s) | result |", "|---|---|---|---|"]
    for r in records:
        summary = r.get("summary", {})
        if "test" in summary:
            result = ", ".join(f"{k}={v:.4f}" for k, v in sorted(summary["test"].items()) if isinstance(v, float))
        elif "tables" in summary:
            result = f"chain report: {Path(summary['chain_dir']) / 'report.md'}"
        else:
            result = "no summary"
        lines.append(f"| {r['name']} | {r['exit_code']} | {r['wall_s']:.0f} | {result} |")
    lines += ["", "## Training throughput", "",
              "| run | batch | channels_last | compile | images/s | TFLOP/s | of bf16 peak |", "|---|---|---|---|---|---|---|"]
    for r in records:
        for t in r.get("throughput", []):
            if "error" in t:
                lines.append(f"| {r['name']} | {t.get('batch_size', '?')} | {t.get('channels_last')} | {t.get('compile')} "
                             f"| failed: {t['error']} | | |")
                continue
            lines.append(f"| {r['name']} | {t['batch_size']} | {t['channels_last']} | {t['compile']} | "
                         f"{t['images_per_s']:.0f} | {t['tflops']:.2f} | {100 * t['peak_fraction']:.2f} % |")
    for r in records:
        report = Path(r["run_dir"]) / "report.md"
        if report.is_file():
            lines += ["", f"## {r['name']}", "", report.read_text()]
    return lines


def torch_device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"


def time_run(run_dir: Path, extra: list[str], smoke: bool, options: list[tuple[bool, bool]]) -> list[dict]:
    recipe = int(throughput.compose_run(run_dir, extra).data.batch_size)
    biggest = recipe if smoke else throughput.largest_batch(run_dir, recipe, extra, cap=16384)
    results = []
    for batch in dict.fromkeys([recipe, biggest]):
        for channels_last, compiled in options:
            try:
                results.append(throughput.measure(run_dir, batch, extra, steps=2 if smoke else 20,
                                                  warmup=1 if smoke else 5, channels_last=channels_last,
                                                  compile_model=compiled))
            except Exception as err:  # a failing option is reported, the others still run
                results.append({"batch_size": batch, "channels_last": channels_last, "compile": compiled,
                                "error": f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny subsets: tests the route, measures nothing")
    parser.add_argument("--only", default=None, help="comma list of plan entries to run")
    parser.add_argument("--logs", type=Path, default=None, help="where the runs go (default: <out>/../gpu_logs)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile throughput option")
    args = parser.parse_args(argv)
    plan = yaml.safe_load(PLAN.read_text())
    mode = "smoke" if args.smoke else "gpu"
    logs = (args.logs or args.out.parent / "gpu_logs").resolve()
    logs.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = args.only.split(",") if args.only else list(plan["runs"])
    options = [(False, False), (True, False)] + ([] if args.no_compile or args.smoke else [(True, True)])
    records = []
    for name in chosen:
        spec = plan["runs"][name]
        overrides = list(plan["common"][mode]) + list(spec.get(mode, []))
        record = run_step(name, spec, overrides, logs)
        run = representative_run(record, spec) if spec.get("throughput") else None
        if record["exit_code"] == 0 and run is not None:
            timing = [o for o in overrides if o.startswith(("trainer=", "trainer.precision", "trainer.accelerator",
                                                               "data.num_workers", "logger="))]
            record["throughput"] = time_run(run, timing, args.smoke, options if not args.smoke else options[:2])
        records.append(record)
        (args.out / "gpu_summary.json").write_text(json.dumps(records, indent=2, default=str))
        (args.out / "gpu_report.md").write_text("\n".join(report_lines(records, args.smoke)) + "\n")
        picture = Path(record["run_dir"]) / "report.png"
        if picture.is_file():
            shutil.copy(picture, args.out / f"{name}_report.png")
    print("\n".join(report_lines(records, args.smoke)))
    return 0 if all(r["exit_code"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
