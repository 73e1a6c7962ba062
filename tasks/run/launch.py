"""How a command's Hydra app runs: preflight composes and checks the config once; a single run
then goes to Hydra's own `run_job` with that config (the run dir, `.hydra/`, the job log and
HydraConfig exactly as `@hydra.main` makes them, without composing the config twice more);
sweeps and Hydra's flags (--multirun, --cfg, --help, ...) go through `@hydra.main`. The whole
command runs guarded (tasks.run.boundary), and every job holds the lock of its run dir
(tasks.run.lock) from before Hydra writes into it until it ends."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from tasks.config.location import CONFIG_SOURCE, working_dir_on_path
from tasks.run.boundary import hydra_output_dir, run_guarded
from tasks.run.lock import hold_run_dir

RESUME_AUTO_LOCKED = (
    "resume=auto chose it as the newest unfinished run of this task, and stops rather than continue "
    "another run or start a new one: wait for that process to end (or stop it), continue a different "
    "run with resume=<run dir>, or start a new run without resume=."
)


def job_name(task: Callable[..., Any]) -> str:
    """The job name `@hydra.main` gives this task: the last part of its module's name, or its
    file's stem when the module runs as a script (HYDRA_MAIN_MODULE names the module instead)."""
    from hydra.core.utils import get_valid_filename

    task = inspect.unwrap(task)
    module = os.environ.get("HYDRA_MAIN_MODULE") or task.__module__
    if module not in (None, "__main__"):
        return module.rpartition(".")[2]
    return get_valid_filename(Path(inspect.getfile(task)).stem)


def apply_threads(cfg: DictConfig) -> None:
    """A run's `threads` key, applied before it builds anything: its sums (and so its numbers) depend
    on the thread count, so a chain fixes it whatever runs beside it (null: torch's default)."""
    threads = cfg.get("threads")
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))


def run_once(task: Callable[[DictConfig], Any], cfg: DictConfig, config_name: str) -> Any:
    """Hydra's RUN mode on a composed config (hydra.core.utils.run_job, as Hydra.run calls it).
    Hydra has no public way to build the user's hydra.callbacks: its internal Callbacks is why
    pyproject.toml caps hydra-core below 1.4."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import configure_log, run_job
    from hydra.types import HydraContext, RunMode

    with open_dict(cfg):
        if cfg.hydra.mode is None:  # as Hydra's _run_app records it
            cfg.hydra.mode = RunMode.RUN
            cfg.hydra.overrides.hydra.append("hydra.mode=RUN")
    configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
    callbacks = Callbacks(cfg)
    callbacks.on_run_start(config=cfg, config_name=config_name)
    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    ret = run_job(
        hydra_context=HydraContext(config_loader=loader, callbacks=callbacks),
        task_function=task,
        config=cfg,
        job_dir_key="hydra.run.dir",
        job_subdir_key=None,
    )
    callbacks.on_run_end(config=cfg, config_name=config_name, job_return=ret)
    return ret.return_value  # re-raises what the task raised


def run_command(
    task: Callable[[DictConfig], Any],
    config_name: str,
    entry: str,
    cfg_dir: Path | str = CONFIG_SOURCE,
    argv: list[str] | None = None,
) -> Any:
    """The whole command: checks first (exit 2 on a user mistake, nothing written), then the
    guarded task in its run dir, which it holds the lock of. The configs come from `cfg_dir` (the
    packaged ones by default), KT_CONFIG_DIR and --config-dir; a `_target_` may name a module of the
    working folder."""
    from tasks.run.preflight import preflight_config

    working_dir_on_path()

    def held_task(cfg: DictConfig) -> Any:
        out = hydra_output_dir()
        with hold_run_dir(out) if out is not None else contextlib.nullcontext():  # each job of a sweep too
            return task(cfg)

    @functools.wraps(task)
    def guarded_task(cfg: DictConfig) -> Any:
        return run_guarded(entry, held_task, cfg, run_dir=hydra_output_dir)

    def command() -> Any:
        args = list(sys.argv if argv is None else argv)
        checked = preflight_config(args, cfg_dir, config_name, job_name(task))
        if checked.config is not None:
            with open_dict(checked.config):  # one resolved dir: the one locked is the one Hydra writes
                run_dir = checked.config.hydra.run.dir = str(checked.config.hydra.run.dir)
            apply_threads(checked.config)
            with hold_run_dir(run_dir, RESUME_AUTO_LOCKED if checked.resume == "auto" else ""):
                return run_once(guarded_task, checked.config, config_name)
        from hydra import main as hydra_main

        sys.argv = checked.argv
        return hydra_main(version_base="1.3", config_path=str(cfg_dir), config_name=config_name)(guarded_task)()

    return run_guarded(entry, command)


def hydra_command(main: Callable[..., Any], config_name: str) -> None:
    """Run a `@hydra.main` app as a user command: the command line and every `_target_` of
    the composed config are checked before Hydra writes anything, then the app runs guarded
    on that same config (tasks.run.launch)."""
    task = getattr(main, "__wrapped__", main)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    entry = spec.name if spec is not None and spec.name != "__main__" else task.__module__
    run_command(task, config_name, entry)
