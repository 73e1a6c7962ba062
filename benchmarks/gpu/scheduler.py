"""Runs jobs side by side: at most `max_jobs` processes at a time, each started once the jobs
it waits for are done, the entry with the higher priority first, then the job with the
longest chain of jobs waiting behind it. A job whose dependency failed is skipped. Past
`stop_starting_at` nothing new starts; jobs still running at `kill_at` are stopped. A job
that was finished before (its run dir has summary.json) is not run again; an interrupted one
resumes from its last.ckpt, as tasks.studies.chain does."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.gpu.jobs import ROOT, Job

POLL_S = 0.5


def downstream_depth(jobs: list[Job]) -> dict[str, int]:
    """For each job, the length of the longest path of jobs that wait on it (itself counted)."""
    waiting_on: dict[str, list[str]] = {j.key: [] for j in jobs}
    for job in jobs:
        for dep in job.deps:
            waiting_on[dep].append(job.key)
    depth: dict[str, int] = {}

    def visit(key: str) -> int:
        if key not in depth:
            depth[key] = 1 + max((visit(k) for k in waiting_on[key]), default=0)
        return depth[key]

    for job in jobs:
        visit(job.key)
    return depth


def start(job: Job, log_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, float]:
    command = list(job.command)
    if (job.run_dir / "checkpoints" / "last.ckpt").is_file():
        command.insert(-1, f"resume={job.run_dir}")  # an interrupted run continues from its last checkpoint
    log = log_dir / (job.key.replace("/", "__") + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        handle.write(" ".join(command[1:]) + "\n\n")
        handle.flush()
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, preexec_fn=os.setpgrp
        )  # own process group, same session: stopped with its children
    print(f"[{time.strftime('%H:%M:%S')}] start {job.key}", flush=True)
    return process, time.monotonic()


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_jobs(
    jobs: list[Job],
    max_jobs: int,
    log_dir: Path,
    env: dict[str, str],
    stop_starting_at: float = float("inf"),
    kill_at: float = float("inf"),
    on_change: Callable[[], None] = lambda: None,
) -> None:
    """Runs the jobs (times are time.monotonic() values); every job ends in a final state."""
    by_key = {j.key: j for j in jobs}
    depth = downstream_depth(jobs)
    for job in jobs:
        if job.finished:
            job.state = "done"
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    try:
        while True:
            for key, (process, started) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                job = by_key[key]
                job.exit_code, job.wall_s = code, time.monotonic() - started
                job.state = "done" if code == 0 and job.finished else "failed"
                print(f"[{time.strftime('%H:%M:%S')}] {job.state} {key} ({job.wall_s:.0f} s)", flush=True)
                del running[key]
                on_change()
            skip_blocked(jobs, by_key)
            now = time.monotonic()
            if now >= kill_at:
                for key, (process, started) in running.items():
                    stop(process)
                    job = by_key[key]
                    job.state, job.wall_s = "stopped at the budget", time.monotonic() - started
                running.clear()
                break
            ready = sorted(
                (j for j in jobs if j.state == "waiting" and all(by_key[d].state == "done" for d in j.deps)),
                key=lambda j: (-j.priority, -depth[j.key]),
            )
            if now < stop_starting_at:
                for job in ready[: max(0, max_jobs - len(running))]:
                    job.state = "running"
                    running[job.key] = start(job, log_dir, env)
            if not running and (not ready or now >= stop_starting_at):
                break
            time.sleep(POLL_S)
    finally:
        for key, (process, _) in running.items():  # interrupted: no orphans left on the GPU
            stop(process)
            by_key[key].state = "stopped"
    for job in jobs:
        if job.state in ("waiting", "running"):
            job.state = "not started"
    on_change()


def skip_blocked(jobs: list[Job], by_key: dict[str, Job]) -> None:
    changed = True
    while changed:
        changed = False
        for job in jobs:
            if job.state == "waiting" and any(by_key[d].state in ("failed", "skipped") for d in job.deps):
                job.state, changed = "skipped", True
