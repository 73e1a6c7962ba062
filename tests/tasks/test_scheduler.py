"""The one scheduler of chains and the GPU route (tasks.studies.scheduler): dependency, priority
and depth order, a failure skips only what waits on it, side by side up to max_jobs, the budget's
start and stop times."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tasks.studies.scheduler import Job, run_jobs


def fake_job(tmp_path: Path, key: str, deps=(), exit_code: int = 0, sleep_s: float = 0.0, priority: int = 0) -> Job:
    run_dir = tmp_path / key
    order = tmp_path / "order.txt"
    script = (
        f"import pathlib, sys, time; log = open({str(order)!r}, 'a'); log.write('start {key}\\n'); log.flush(); "
        f"time.sleep({sleep_s}); d = pathlib.Path({str(run_dir)!r}); d.mkdir(parents=True, exist_ok=True); "
        f"log.write('end {key}\\n'); log.close(); "
        + (
            "(d / 'summary.json').write_text('{}')"
            if exit_code == 0
            else f"sys.exit({exit_code})"
            if exit_code > 0
            else f"import os; os.kill(os.getpid(), {-exit_code})"  # killed by a signal
        )
    )
    return Job(
        key, "fake", [sys.executable, "-c", script, f"hydra.run.dir={run_dir}"], run_dir, list(deps), priority=priority
    )


def test_scheduler_runs_by_dependency_and_depth_and_skips_after_a_failure(tmp_path):
    jobs = [
        fake_job(tmp_path, "a"),
        fake_job(tmp_path, "b", ["a"]),
        fake_job(tmp_path, "c", exit_code=3),
        fake_job(tmp_path, "d", ["c"]),
        fake_job(tmp_path, "e"),
        fake_job(tmp_path, "f", priority=1),
    ]
    (tmp_path / "done_before").mkdir()
    jobs.append(Job("g", "fake", ["false"], tmp_path / "done_before"))
    (tmp_path / "done_before" / "summary.json").write_text("{}")
    run_jobs(jobs, 1, tmp_path / "logs", {"PATH": "/usr/bin:/bin"})
    lines = (tmp_path / "order.txt").read_text().split()
    # one at a time; the priority first, then the longer chains (a, c have one job waiting behind them)
    assert lines == [w for k in "facbe" for w in ("start", k, "end", k)]
    assert {j.key: j.state for j in jobs} == {
        "a": "done",
        "b": "done",
        "c": "failed",
        "d": "skipped",
        "e": "done",
        "f": "done",
        "g": "done",
    }
    assert [j.exit_code for j in jobs] == [0, 0, 3, None, 0, 0, None]


def test_scheduler_starts_nothing_past_the_budget_and_stops_what_runs_at_its_end(tmp_path):
    late = [fake_job(tmp_path, "a"), fake_job(tmp_path, "b", ["a"])]
    run_jobs(late, 2, tmp_path / "logs", {}, stop_starting_at=time.monotonic())
    assert [j.state for j in late] == ["not started", "not started"] and not (tmp_path / "order.txt").exists()
    slow = [fake_job(tmp_path, "slow", sleep_s=60), fake_job(tmp_path, "after", ["slow"])]
    started = time.monotonic()
    run_jobs(slow, 2, tmp_path / "logs", {}, kill_at=started + 3)
    assert [j.state for j in slow] == ["stopped at the budget", "not started"]
    assert time.monotonic() - started < 30


def test_independent_jobs_run_side_by_side_and_a_killed_one_stops_only_what_waits_on_it(tmp_path):
    jobs = [
        fake_job(tmp_path, "a", sleep_s=1.0),
        fake_job(tmp_path, "b", sleep_s=1.0),
        fake_job(tmp_path, "killed", exit_code=-9),
        fake_job(tmp_path, "after", ["killed"]),
        fake_job(tmp_path, "c", ["a", "b"]),
    ]
    run_jobs(jobs, 2, tmp_path / "logs", {"PATH": "/usr/bin:/bin"})
    lines = (tmp_path / "order.txt").read_text().split()
    assert lines[:4] == ["start", "a", "start", "b"]  # both started before either ended
    assert {j.key: j.state for j in jobs} == {
        "a": "done",
        "b": "done",
        "killed": "failed",
        "after": "skipped",
        "c": "done",
    }
    assert jobs[2].exit_code == -9 and (tmp_path / "logs" / "killed.log").read_text().startswith("-c ")
