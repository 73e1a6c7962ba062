"""The GPU route: the Fashion-MNIST anchor and every method's study chain on one lent GPU, all
side by side (tasks/studies/scheduler.py, the chains' scheduler), then each entry's training throughput on the idle
GPU (images/s, achieved TFLOP/s against the bf16 peak) at the recipe's batch size and at the
largest that fits, and one report.

    python -m benchmarks.gpu.studies --out $OUT --budget-s 480   # on the GPU machine (benchmarks/gpu/run.sh)
    python -m benchmarks.gpu.studies --smoke --out /tmp/smoke     # the same steps on the CPU, tiny subsets

Writes into --out: gpu_report.md (every table), gpu_summary.json (every job, every
summary.json, every throughput record) and runs.tar.gz (each run's summary.json and log, the
chains' report.md/json/png). The runs themselves go to --logs (default <out>/../gpu_logs);
re-running with the same --logs skips finished runs and resumes interrupted ones."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tarfile
import time
from pathlib import Path

import yaml

from benchmarks.gpu import jobs as plan_jobs
from benchmarks.gpu.jobs import ROOT
from benchmarks.gpu.report import report_lines
from benchmarks.gpu.timing import time_entries
from tasks.studies.scheduler import run_jobs

PLAN = Path(__file__).with_name("plan.yaml")


def load_plan(path: Path = PLAN) -> dict:
    return yaml.safe_load(path.read_text())


def build_entries(plan: dict, mode: str, logs: Path, chosen: list[str]) -> dict[str, dict]:
    """Every chosen plan entry with its jobs (and, for a chain, its runs and its one-line command)."""
    from tasks.errors import UserError
    from tasks.studies.chain import load_chain

    entries = {}
    for name in chosen:
        if name not in plan["runs"]:
            raise UserError(f"--only names '{name}', which is not in the plan; its entries: {list(plan['runs'])}.")
        spec = plan["runs"][name]
        common = list(plan["common"][mode])
        if "experiment" in spec:
            job = plan_jobs.experiment_job(name, spec, [*common, *spec.get(mode, [])], logs)
            entries[name] = {"spec": spec, "jobs": [job], "command": shlex.join(job.command[1:])}
            continue
        chain = load_chain(spec["chain"])
        overrides = plan_jobs.chain_overrides(chain, common, spec, mode)
        seeds = (spec.get("seeds") or {}).get(mode)
        runs, jobs = plan_jobs.chain_jobs(name, spec, chain, overrides, logs / name, seeds)
        command = ["-m", "tasks.chain", spec["chain"], *overrides, "--dir", str((logs / name).resolve())]
        command += ["--seeds", ",".join(map(str, seeds))] if seeds else []
        entries[name] = {"spec": spec, "chain": chain, "runs": runs, "jobs": jobs, "command": shlex.join(command)}
    return entries


def chain_report(entry: dict, wall: float) -> dict:
    """The chain's own tables (tasks.studies.chain.report: CIs, paired differences) once its runs are done."""
    from tasks.errors import UserError
    from tasks.studies.chain import report

    done = sum(j.state == "done" for j in entry["jobs"])
    if done < len(entry["jobs"]):
        return {"unfinished": sorted({j.key for j in entry["jobs"] if j.state != "done"})}
    chain_dir = entry["runs"][0].run_dir.parents[1 if entry["runs"][0].seed is not None else 0]
    try:
        return report(entry["chain"], entry["runs"], chain_dir, wall)
    except (UserError, ValueError, KeyError, OSError) as err:  # reported; the other entries still are
        return {"report_error": f"{type(err).__name__}: {err}"}


def write_outputs(out: Path, entries: dict[str, dict], records: dict[str, dict], smoke: bool, meta: dict) -> None:
    summary = {
        "meta": meta,
        "entries": records,
        "jobs": [
            {
                "key": j.key,
                "state": j.state,
                "exit_code": j.exit_code,
                "wall_s": j.wall_s,
                "run_dir": str(j.run_dir),
                "command": " ".join(j.command[1:]),
                "summary": json.loads((j.run_dir / "summary.json").read_text()) if j.finished else None,
            }
            for e in entries.values()
            for j in e["jobs"]
        ],
    }
    (out / "gpu_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "gpu_report.md").write_text("\n".join(report_lines(entries, records, smoke, meta)) + "\n")


def pack_runs(out: Path, logs: Path) -> None:
    """runs.tar.gz: what the device may send back (few files): summaries, logs, chain reports."""
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for path in sorted(logs.rglob("*")):
            keep = (
                path.name in ("summary.json", "chain_summary.json", "metrics.csv", "timestep_oracle.png")
                or path.suffix == ".log"
                or path.name.startswith("report")
                or path.name.endswith("_table.md")
            )
            if path.is_file() and keep and "throughput" not in path.parts:
                tar.add(path, arcname=str(path.relative_to(logs)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny subsets: tests the route, measures nothing")
    parser.add_argument("--only", default=None, help="comma list of plan entries to run")
    parser.add_argument("--logs", type=Path, default=None, help="where the runs go (default: <out>/../gpu_logs)")
    parser.add_argument("--jobs", type=int, default=None, help="processes at a time (default: 8 on the GPU, 2 smoke)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="the whole script's time: no run starts after budget - throughput reserve, runs still "
        "going at the budget are stopped, the report is written either way",
    )
    parser.add_argument(
        "--throughput-s",
        type=float,
        default=None,
        help="the end of the budget kept for the throughput timings (default: 120 s of a budget)",
    )
    parser.add_argument("--no-throughput", action="store_true", help="the studies only")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile throughput option")
    parser.add_argument("--plan", action="store_true", help="print every job (waits-for, command) and stop")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still stops the runs (scheduler's finally)
    started = time.monotonic()
    plan = load_plan()
    mode = "smoke" if args.smoke else "gpu"
    logs = (args.logs or args.out.parent / "gpu_logs").resolve()
    chosen = args.only.split(",") if args.only else list(plan["runs"])
    from tasks.errors import UserError

    try:
        entries = build_entries(plan, mode, logs, chosen)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    all_jobs = [j for e in entries.values() for j in e["jobs"]]
    if args.plan:
        for name, entry in entries.items():
            print(f"== {name}: python {entry['command']}")
            for job in entry["jobs"]:
                print(f"{job.key}  (after {', '.join(job.deps) or 'nothing'})\n    {shlex.join(job.command[1:])}")
        return 0
    logs.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    from tasks.run.preflight import check_stage_commands

    try:
        check_stage_commands([j.command for j in all_jobs if not j.finished])  # a wrong key stops it before any run
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    budget = args.budget_s if args.budget_s is not None else float("inf")
    reserve = (
        0.0
        if args.no_throughput or args.budget_s is None
        else (args.throughput_s if args.throughput_s is not None else min(120.0, budget / 4))
    )
    max_jobs = args.jobs or (2 if args.smoke else 8)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // max_jobs)))
    meta = {
        "mode": mode,
        "budget_s": args.budget_s,
        "throughput_reserve_s": reserve,
        "max_jobs": max_jobs,
        "omp_num_threads": env["OMP_NUM_THREADS"],
        "cpu_count": os.cpu_count(),
        "logs": str(logs),
    }
    records: dict[str, dict] = {name: {"command": e["command"]} for name, e in entries.items()}

    def progress() -> None:
        meta["elapsed_s"] = time.monotonic() - started
        write_outputs(args.out, entries, records, args.smoke, meta)

    run_jobs(
        all_jobs,
        max_jobs,
        logs / "joblogs",
        env,
        stop_starting_at=started + budget - reserve,
        kill_at=started + budget,
        on_change=progress,
        cwd=ROOT,
    )
    meta["studies_s"] = time.monotonic() - started
    for name, entry in entries.items():
        walls = [j.wall_s for j in entry["jobs"] if j.wall_s is not None]
        records[name]["process_s"] = sum(walls)
        if "chain" in entry:
            records[name]["chain"] = chain_report(entry, meta["studies_s"])
    progress()
    if not args.no_throughput:

        def timed(results: dict[str, list[dict]]) -> None:
            for name, measured in results.items():
                records[name]["throughput"] = measured
            progress()

        timed(
            time_entries(
                entries,
                list(plan.get("throughput", {}).get(mode, [])),
                args.smoke,
                started + budget,
                not args.no_compile,
                on_change=timed,
            )
        )
    meta["elapsed_s"] = time.monotonic() - started
    progress()
    pack_runs(args.out, logs)
    print((args.out / "gpu_report.md").read_text())
    return 0 if all(j.state == "done" for j in all_jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
