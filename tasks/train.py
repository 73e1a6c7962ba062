"""The one entry point: compose the config -> instantiate -> fit -> test -> export -> summary.

    kt-train                                          # classify_digits on the bundled digits
    kt-train experiment=<name> trainer=ddp_cpu seed=1 trainer.max_epochs=5
    kt-train --config-dir my_conf experiment=my_exp   # a config folder of your own beside ours
    kt-train --help                                   # config groups and options

`python -m tasks.train` and the checkout's `python train.py` are the same command. It holds no
method logic: everything comes from `_target_` entries in the configs (conf/, packaged as tasks.conf)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import tasks  # noqa: F401  (registers the resolvers conf/ uses)


def train(cfg: DictConfig) -> dict:
    """Run one job described by a composed config; returns its summary. The job holds the lock of
    its run dir throughout (tasks.run.lock): a second writer stops at once."""
    from tasks.config.check import check_config
    from tasks.run.guards import check_launch
    from tasks.run.launch import apply_threads
    from tasks.run.lock import hold_run_dir

    start = time.time()
    check_config(cfg, command="train")  # preflight did this for the command line; in-process callers come here
    apply_threads(cfg)
    check_launch(cfg)
    out = Path(cfg.paths.output_dir)
    with hold_run_dir(out):
        return _train(cfg, out, start)


def _train(cfg: DictConfig, out: Path, start: float) -> dict:
    """The run itself; a stop by signal leaves an interrupted summary, and a shape error that is a
    data/network disagreement becomes the UserError that names it (tasks.run.mismatch)."""
    import pytorch_lightning as pl
    import torch
    from hydra.core.hydra_config import HydraConfig
    from pytorch_lightning.utilities.model_helpers import is_overridden

    from tasks.io.cards import data_config
    from tasks.io.checkpoints import load_training_checkpoint
    from tasks.run import interruption, mismatch
    from tasks.run.export import export_run
    from tasks.run.instantiate import build, build_group, trainer_plugins
    from tasks.run.resume import resume_checkpoint
    from tasks.run.summary import checkpoint_paths, plain_metrics, print_summary, write_summary

    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    # Everything a user names is read and checked before any logger run exists (no W&B run for a failed start).
    ckpt_path = resume_checkpoint(cfg.get("resume"), out)
    if ckpt_path:
        load_training_checkpoint(ckpt_path)  # refuses corrupt or code-carrying files before Lightning sees them
    datamodule = build("data", cfg.data)
    model = build("model", cfg.model)
    callbacks = build_group("callbacks", cfg.get("callbacks"))
    datamodule.prepare_data()
    datamodule.setup("fit")  # missing or broken data files stop here; Lightning's own setup call is then a no-op
    loggers = build_group("logger", cfg.get("logger"))
    trainer = build(
        "trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False, **trainer_plugins(cfg.trainer)
    )
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    hydra_cfg = HydraConfig.get()
    run = {
        "task_name": cfg.task_name,
        "experiment": hydra_cfg.runtime.choices.get("experiment"),
        "overrides": list(hydra_cfg.overrides.task),
        "seed": cfg.seed,
        "threads": torch.get_num_threads(),  # the run's numbers depend on it (tasks.run.launch.apply_threads)
        "run_dir": str(out),
    }
    if getattr(datamodule, "labels_used", None) is not None:  # a label budget: which labels the run read
        run["labels_used"] = datamodule.labels_used

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        fit_metrics = plain_metrics(trainer.callback_metrics)  # trainer.test replaces them
        checkpoints = checkpoint_paths(trainer)
        test_metrics = {}
        if cfg.get("test") and is_overridden("test_step", model):
            best = checkpoints.get("best") or checkpoints.get("last")
            tested = trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
            test_metrics = plain_metrics(tested[0])
        exports = {}
        if cfg.get("export") and hasattr(model, "export_artifacts") and trainer.is_global_zero:
            card_run = {
                "task_name": cfg.task_name,
                "experiment": run["experiment"],
                "run_dir": str(out),
                "seed": cfg.seed,
                "test": test_metrics,
                "overrides": run["overrides"],
            }
            # all or nothing (a temp folder, then a rename); the run's and the data's fields go into the export's card
            exports = export_run(model, out / "export", card_run, data_config(datamodule))
        summary = {
            **run,
            "test": test_metrics,
            "final": fit_metrics,
            "checkpoints": checkpoints,
            "export": exports,
            "global_step": trainer.global_step,
            "epochs": trainer.current_epoch,
            "wall_time_s": time.time() - start,
            "finished": datetime.now().isoformat(timespec="seconds"),
        }
        if trainer.is_global_zero:
            write_summary(out / "summary.json", summary)
            print_summary(summary)
        return summary
    except BaseException as err:
        signum = interruption.received()
        if signum is not None:
            if trainer.is_global_zero:
                write_interrupted_run(out, signum, run, trainer, time.time() - start)
            raise
        explained = mismatch.explain(err, datamodule, model, cfg) if isinstance(err, Exception) else None
        if explained is not None:
            raise explained from None
        raise
    finally:
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            wandb.finish()


def write_interrupted_run(out: Path, signum: int, run: dict, trainer, wall: float) -> None:
    """The summary of a run a signal stopped: where it stopped, what it kept, how to go on."""
    from tasks.run.resume import resumable_checkpoint
    from tasks.run.summary import checkpoint_paths, write_interrupted

    kept = resumable_checkpoint(out)
    go_on = (
        f"Continue it with resume=auto (the newest unfinished run of '{run['task_name']}') or resume={out}; "
        f"it goes on from {kept}."
        if kept is not None
        else "It stopped before its first checkpoint: run it again."
    )
    details = {**run, "global_step": trainer.global_step, "epochs": trainer.current_epoch}
    details.update(checkpoints=checkpoint_paths(trainer), resumable=str(kept) if kept else None)
    write_interrupted(out, signum, {**details, "wall_time_s": wall, "continue": go_on})


def main(cfg: DictConfig) -> float | None:
    """The task of `kt-train ...` (tasks.run.launch guards it: a user mistake is one message and
    exit 2, and a failed start leaves no run dir; a bug is one line with the log path, exit 1)."""
    summary = train(cfg)
    metric = cfg.get("optimized_metric")
    if metric:  # the value an Optuna sweep optimises
        value = summary["test"].get(metric, summary["final"].get(metric))
        return float(value) if value is not None else None
    return None


def command(entry: str = "kt-train") -> None:
    """The command line: composed and checked once, before anything is written."""
    from tasks.run.launch import run_command

    run_command(main, "train", entry=entry)


if __name__ == "__main__":
    command("tasks.train")
