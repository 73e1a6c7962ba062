"""Launch combinations that cannot work, stopped at start-up with the supported route."""

from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from tasks.errors import UserError


def _spawns_processes(trainer: DictConfig) -> bool:
    strategy = str(trainer.get("strategy", "auto"))
    devices = trainer.get("devices", 1)
    many = (
        devices in ("auto", -1, "-1")
        or (isinstance(devices, int) and devices > 1)
        or (isinstance(devices, (list, tuple)) and len(devices) > 1)
    )
    return many and strategy.startswith(("ddp", "fsdp", "deepspeed")) and "spawn" not in strategy


def check_launch(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    launcher = str(hydra_cfg.launcher.get("_target_", "")) if hydra_cfg else ""
    in_slurm = "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in (None, "bash", "interactive")
    if hydra_cfg and hydra_cfg.mode == RunMode.MULTIRUN and _spawns_processes(cfg.trainer) and not in_slurm:
        raise UserError(
            "A multirun sweep cannot use a multi-process strategy (trainer=ddp/ddp_cpu/fsdp) with Lightning's own "
            "process launcher: every child would start its own sweep. Run the sweep with hydra/launcher=slurm "
            "(one SLURM task per device), or sweep with one device per job (trainer=cpu or trainer=gpu)."
        )
    if "Slurm" in launcher:
        tasks, devices = hydra_cfg.launcher.get("tasks_per_node"), cfg.trainer.get("devices")
        if not isinstance(devices, int) or tasks != devices:
            raise UserError(
                f"hydra/launcher=slurm needs hydra.launcher.tasks_per_node ({tasks}) == trainer.devices ({devices}), "
                "an integer: Lightning expects one SLURM task per device. Set trainer.devices=<GPUs per node>."
            )
