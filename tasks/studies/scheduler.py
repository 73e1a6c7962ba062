"""The one scheduler of stage runs, for chains (`python -m tasks.chain <name> --jobs N`) and the
GPU route (benchmarks/gpu): at most `max_jobs` processes at a time, each started once the jobs
it waits for are done, the entry with the higher priority first, then the job with the longest
chain of jobs waiting behind it. A job whose dependency failed is skipped; the others go on.
Past `stop_starting_at` nothing new starts; jobs still running at `kill_at` are stopped. A job
that finished before (its run dir has a finished summary.json) is not run again; an interrupted
one resumes from its last checkpoint (`resume=<run dir>`).

Each job is its own process in its own process group: a `launch` callable starts it (a fresh
interpreter by default; tasks.studies.forkserver forks it from a parent that imported the
libraries once) and returns a handle with `pid`, `poll()` and `wait(timeout)`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tasks.run.resume import resumable_checkpoint
from tasks.run.summary import finished

POLL_S = 0.2


@dataclass
class Job:
    key: str  # "distil/seed1", "repfusion/distil_rl/seed1", ...
    entry: str  # the chain or plan entry it belongs to
    command: list[str]  # [python, -m, module, overrides...]
    run_dir: Path
    deps: list[str] = field(default_factory=list)
    priority: int = 0  # higher starts first
    state: str = "waiting"  # waiting | running | done | failed | skipped | not started | stopped ...
    exit_code: int | None = None
    wall_s: float | None = None
    log: Path | None = None  # where its output went (None: this process's own stdout)

    @property
    def finished(self) -> bool:
        return finished(self.run_dir)  # an interrupted run's summary does not count


class Handle(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


Launch = Callable[[list[str], Path, dict[str, str], Path | None], Handle]


def popen(
    command: list[str], cwd: Path, env: dict[str, str], log: Path | None, own_group: bool = True
) -> subprocess.Popen:
    """A fresh interpreter, its output to `log`. In its own process group (stopped with its
    children), or with `own_group=False` in ours: a chain's stages go with the chain when its
    whole job is killed."""
    group = os.setpgrp if own_group else None
    if log is None:
        return subprocess.Popen(command, cwd=cwd, env=env, preexec_fn=group)
    with log.open("a") as handle:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, preexec_fn=group)


def send(pid: int, signum: int) -> None:
    """To the job's process group when it leads one, else to the job alone."""
    if os.getpgid(pid) == pid:
        os.killpg(pid, signum)
    else:
        os.kill(pid, signum)


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


def command_of(job: Job) -> list[str]:
    """The job's command; an interrupted run continues from its last checkpoint."""
    if resumable_checkpoint(job.run_dir) is not None:
        return [*job.command, f"resume={job.run_dir}"]
    return list(job.command)


def start(job: Job, log_dir: Path | None, env: dict[str, str], cwd: Path, launch: Launch) -> tuple[Handle, float]:
    command = command_of(job)
    if log_dir is not None:
        job.log = log_dir / (job.key.replace("/", "__") + ".log")
        job.log.parent.mkdir(parents=True, exist_ok=True)
        job.log.write_text(" ".join(command[1:]) + "\n\n")
    print(f"[{time.strftime('%H:%M:%S')}] start {job.key}\n    {' '.join(command[1:])}", flush=True)
    return launch(command, cwd, env, job.log), time.monotonic()


def stop(process: Handle, signum: int = signal.SIGTERM, grace_s: float = 15.0) -> None:
    """Pass the stop on to the job's process group; kill it if it has not ended after `grace_s`
    (a training run writes its interrupted summary first)."""
    try:
        send(process.pid, signum)
        process.wait(timeout=grace_s)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        send(process.pid, signal.SIGKILL)
        process.wait()


def run_jobs(
    jobs: list[Job],
    max_jobs: int,
    log_dir: Path | None,
    env: dict[str, str],
    stop_starting_at: float = float("inf"),
    kill_at: float = float("inf"),
    on_change: Callable[[], None] = lambda: None,
    cwd: Path | None = None,
    launch: Launch = popen,
    grace_s: float = 15.0,
) -> None:
    """Runs the jobs (times are time.monotonic() values); every job ends in a final state. A stop
    of this process (KeyboardInterrupt, tasks.run.interruption) is passed on to the running jobs."""
    by_key = {j.key: j for j in jobs}
    depth = downstream_depth(jobs)
    cwd = Path.cwd() if cwd is None else cwd
    for job in jobs:
        if job.finished:
            job.state = "done"
    running: dict[str, tuple[Handle, float]] = {}
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
                    stop(process, grace_s=grace_s)
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
                    running[job.key] = start(job, log_dir, env, cwd, launch)
            if not running and (not ready or now >= stop_starting_at):
                break
            time.sleep(POLL_S)
    except BaseException as err:  # a stop of this process: the jobs get the same signal, no orphans
        for key, (process, _) in running.items():
            stop(process, getattr(err, "signum", signal.SIGTERM), grace_s)
            by_key[key].state = "stopped"
        running.clear()
        raise
    finally:
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
