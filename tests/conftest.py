"""Shared fixtures: compose configs like train.py does, run jobs in-process or as real
subprocesses, all offline and inside tmp dirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import tasks  # noqa: F401  (resolvers)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on the two cores: one thread each, in the tests' own
    # subprocesses too, rather than two OpenMP teams spinning against each other.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# Small, fast settings for any classifier-like run in the tests.
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "logger=csv",
    "trainer.enable_model_summary=false",
]


def compose_config(overrides: list[str], run_dir: Path | None = None, config_name: str = "train") -> DictConfig:
    """Compose conf/train.yaml (or another primary config of conf/) as `python train.py
    <overrides>` would, with HydraConfig set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
            cfg.hydra.runtime.output_dir = str(run_dir)
            cfg.hydra.job.num = 0
            cfg.hydra.job.id = "test"
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_in_process(overrides: list[str], run_dir: Path) -> dict:
    """Run train.train() in this process (fast: no interpreter start)."""
    sys.path.insert(0, str(ROOT))
    from train import train

    run_dir.mkdir(parents=True, exist_ok=True)
    return train(compose_config(overrides, run_dir))


def run_cli(
    args: list[str], cwd: Path = ROOT, timeout: int = 600, env: dict | None = None, module: str | None = None
) -> subprocess.CompletedProcess:
    """Run `python train.py <args>` (or `python -m <module> <args>`) as a user would: forked from a
    server that imported the libraries once, as a chain runs its stages (tasks.studies.forkserver);
    KT_TEST_FRESH=1: a fresh interpreter each."""
    entry = ["-m", module] if module else [str(ROOT / "train.py")]
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1", **(env or {})}
    command = [sys.executable, *entry, *args]
    if os.environ.get("KT_TEST_FRESH") == "1":
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    return fork_server().run(command, Path(cwd), full_env, timeout)


_SERVER: list = []


def fork_server():
    """This test process's fork server, started on first use and ended with the process."""
    if not _SERVER:
        import atexit

        from tasks.studies.forkserver import Server

        _SERVER.append(Server(ROOT, dict(os.environ)))
        atexit.register(_SERVER[0].close)
    return _SERVER[0]


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)
