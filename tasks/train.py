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
    """Run one job described by a composed config; returns its summary."""
    import pytorch_lightning as pl
    from hydra.core.hydra_config import HydraConfig
    from pytorch_lightning.utilities.model_helpers import is_overridden

    from tasks.config.check import check_config
    from tasks.io.cards import data_config
    from tasks.io.checkpoints import load_training_checkpoint
    from tasks.run.export import export_run
    from tasks.run.guards import check_launch
    from tasks.run.instantiate import build, build_group, trainer_plugins
    from tasks.run.resume import resume_checkpoint
    from tasks.run.summary import checkpoint_paths, plain_metrics, print_summary, write_summary

    start = time.time()
    check_config(cfg, command="train")  # preflight did this for the command line; in-process callers come here
    check_launch(cfg)
    out = Path(cfg.paths.output_dir)
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
        hydra_cfg = HydraConfig.get()
        if cfg.get("export") and hasattr(model, "export_artifacts") and trainer.is_global_zero:
            run = {
                "task_name": cfg.task_name,
                "experiment": hydra_cfg.runtime.choices.get("experiment"),
                "run_dir": str(out),
                "seed": cfg.seed,
                "test": test_metrics,
                "overrides": list(hydra_cfg.overrides.task),
            }
            # all or nothing (a temp folder, then a rename); the run's and the data's fields go into the export's card
            exports = export_run(model, out / "export", run, data_config(datamodule))
        summary = {
            "task_name": cfg.task_name,
            "experiment": hydra_cfg.runtime.choices.get("experiment"),
            "overrides": list(hydra_cfg.overrides.task),
            "seed": cfg.seed,
            "run_dir": str(out),
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
    finally:
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            wandb.finish()


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
