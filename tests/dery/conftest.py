"""Fixtures of DeRy's tests: similarity / partition / search runs on the tiny random-init
zoo (conf/dery/zoo/tiny.yaml) and a few probe images, and composed stage configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.conftest import compose_config

PROBE = ["probe.num_images=96", "probe.batch_size=48"]


def compose_stage(stage: str, overrides: list[str], run_dir: Path) -> DictConfig:
    """conf/dery/<stage>.yaml composed as `python -m dery.<stage> <overrides>` would."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return compose_config(overrides, run_dir, f"dery/{stage}")


@pytest.fixture(scope="session")
def stages(tmp_path_factory):
    """Run dirs of similarity -> partition on the tiny zoo (in-process, one cache)."""
    from dery import partition, similarity

    root = tmp_path_factory.mktemp("dery_stages")
    cache = [f"cache_dir={root / 'cache'}"]
    sim_dir, part_dir = root / "similarity", root / "partition"
    sim = similarity.compute(compose_stage("similarity", ["dery/zoo=tiny", *PROBE, *cache], sim_dir), sim_dir)
    _write_summary(sim_dir, "similarity", sim)
    part = partition.compute(compose_stage("partition", [f"similarity={sim_dir}", "restarts=20"], part_dir), part_dir)
    _write_summary(part_dir, "partition", part)
    return {"root": root, "similarity": sim_dir, "partition": part_dir, "sim": sim, "part": part}


@pytest.fixture(scope="session")
def tiny_spec(stages) -> Path:
    """spec.yaml of a search on the tiny zoo (the default random search: every feasible network)."""
    from dery import search

    run_dir = stages["root"] / "search"
    overrides = [
        f"partition={stages['partition']}",
        "proxy.batches=1",
        "proxy.batch_size=8",
        f"cache_dir={run_dir / 'cache'}",
    ]
    cfg = compose_stage("search", overrides, run_dir)
    result = search.compute(cfg, run_dir)
    _write_summary(run_dir, "search", result)
    return Path(result["spec"])


def _write_summary(run_dir: Path, stage: str, result: dict) -> None:
    from tasks.run.summary import write_summary

    write_summary(run_dir / "summary.json", {"stage": stage, **result})
