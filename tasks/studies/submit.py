"""A chain on a cluster: every stage run becomes one submitit job, with a SLURM dependency
(`afterok`) on the runs it reads through `{run:<stage>}`; a last job writes the report.
`submitit_local` runs the same jobs as local processes (for tests and single machines),
where each job waits for its dependencies itself, since the local executor has no scheduler.

    python -m tasks.chain repfusion_digits --launcher slurm --slurm partition=gpu --slurm gpus_per_node=1
    python -m tasks.chain repfusion_digits --launcher submitit_local
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tasks.errors import UserError
from tasks.run.summary import finished

DEFAULT_SLURM = {
    "timeout_min": 1440,
    "nodes": 1,
    "tasks_per_node": 1,
    "gpus_per_node": 1,
    "cpus_per_task": 8,
    "mem_gb": 64,
}
POLL_S = 2.0


def run_stage(command: list[str], cwd: str, waits_for: list[str], timeout_s: float | None = None) -> str:
    """The body of one job: wait until the runs it depends on have finished (local
    executor only; on SLURM `afterok` already held the job back), then run the stage."""
    start = time.time()
    for run_dir in waits_for:
        while not finished(run_dir):
            if (Path(run_dir) / "FAILED").is_file():
                raise RuntimeError(f"dependency {run_dir} failed; not running {' '.join(command[1:3])}")
            if timeout_s is not None and time.time() - start > timeout_s:
                raise TimeoutError(f"dependency {run_dir} did not finish within {timeout_s} s")
            time.sleep(POLL_S)
    code = subprocess.run(command, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    if code != 0:
        out = Path(command[-1].split("=", 1)[1]) if command[-1].startswith("hydra.run.dir=") else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "FAILED").write_text(f"exit code {code}\n")
        raise RuntimeError(f"stage command failed with exit code {code}: {' '.join(command[1:])}")
    return command[-1]


def parse_params(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs (values as YAML scalars) for submitit's `update_parameters`."""
    import yaml

    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--slurm takes key=value (e.g. --slurm partition=gpu), got '{item}'.")
        params[key] = yaml.safe_load(value)
    return params


def make_executor(launcher: str, folder: Path, params: dict[str, Any], stage_params: dict[str, Any]):
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm|submitit_local needs submitit: pip install -e '.[cluster]'.") from None
    if launcher == "submitit_local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=int({**params, **stage_params}.get("timeout_min", 60)))
        return executor
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    merged = {**DEFAULT_SLURM, **params, **stage_params}
    try:
        executor.update_parameters(
            **{k if k.startswith("slurm_") or k in DEFAULT_SLURM else f"slurm_{k}": v for k, v in merged.items()}
        )
    except (ValueError, TypeError) as err:
        raise UserError(f"SLURM parameters {merged} were refused by submitit: {err}") from None
    return executor


def submit_chain(
    chain, runs, chain_dir: Path, chain_argv: list[str], launcher: str, slurm: list[str], selected: set[str], root: Path
) -> dict:
    """Submit every unfinished selected run as a job, with dependencies, then the report job.
    Waits for the jobs with the local executor; returns at once with SLURM."""
    params = parse_params(slurm)
    folder = chain_dir / "submitit"
    prefix = Path(chain_argv[0]).stem
    jobs: dict[int, Any] = {}
    index_of = {run.run_dir: i for i, run in enumerate(runs)}
    for index, run in enumerate(runs):
        if run.finished or run.stage not in selected:
            continue
        stage_params = dict(chain.stages[run.stage].get("slurm") or {})
        executor = make_executor(launcher, folder, params, stage_params)
        earlier = [jobs[index_of[d]] for d in run.needs if index_of.get(d) in jobs]
        waits_for = [] if launcher == "slurm" else [str(d) for d in run.needs]
        if launcher == "slurm" and earlier:
            executor.update_parameters(
                slurm_additional_parameters={
                    **params.get("additional_parameters", {}),
                    "dependency": "afterok:" + ":".join(str(j.job_id) for j in earlier),
                }
            )
        name = run.stage + (f"_seed{run.seed}" if run.seed is not None else "")
        executor.update_parameters(name=f"{prefix}-{name}")
        command = list(run.command)
        if (run.run_dir / "checkpoints" / "last.ckpt").is_file():
            command.insert(-1, f"resume={run.run_dir}")  # a requeued stage continues in place
        jobs[index] = executor.submit(run_stage, command, str(root), waits_for)
        print(
            f"=== submitted {name}: job {jobs[index].job_id}"
            + (f" (after {', '.join(str(j.job_id) for j in earlier)})" if earlier else ""),
            flush=True,
        )
    report_executor = make_executor(launcher, folder, {**params, "gpus_per_node": 0, "tasks_per_node": 1}, {})
    report_executor.update_parameters(name=f"{prefix}-report")
    report_cmd = [sys.executable, "-m", "tasks.chain", *chain_argv, "--dir", str(chain_dir)]
    if launcher == "slurm" and jobs:
        report_executor.update_parameters(
            slurm_additional_parameters={"dependency": "afterok:" + ":".join(str(j.job_id) for j in jobs.values())}
        )
    waits = [] if launcher == "slurm" else [str(r.run_dir) for r in runs]
    report_job = report_executor.submit(run_stage, report_cmd, str(root), waits)
    print(f"=== submitted report: job {report_job.job_id}; logs in {folder}", flush=True)
    if launcher == "slurm":
        return {
            "chain_dir": str(chain_dir),
            "jobs": {i: str(j.job_id) for i, j in jobs.items()},
            "report_job": str(report_job.job_id),
        }
    failures = []
    for index, job in jobs.items():
        try:
            job.result()
        except Exception as err:  # submitit re-raises the job's error with its remote traceback
            failures.append(f"{runs[index].stage}: {str(err).strip().splitlines()[-1]}")
    if failures:
        raise UserError(
            f"Chain jobs failed: {failures}. Their logs are in {folder}. "
            f"Fix the cause and submit again with --dir {chain_dir}."
        )
    report_job.result()
    return {"chain_dir": str(chain_dir), "jobs": {i: str(j.job_id) for i, j in jobs.items()}}
