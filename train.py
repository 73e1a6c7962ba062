"""The one entry point: compose the config -> instantiate -> fit -> test -> export -> summary.

    python train.py                                   # classify_digits on the bundled digits
    python train.py experiment=<name> trainer=ddp_cpu seed=1 trainer.max_epochs=5
    python train.py --help                            # config groups and options

It holds no method logic: everything comes from `_target_` entries in conf/."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import tasks  # noqa: F401  (registers the resolvers conf/ uses)
from tasks.errors import UserError
from tasks.run.preflight import preflight

CONF_DIR = Path(__file__).resolve().parent / "conf"


def train(cfg: DictConfig) -> dict:
    """Run one job described by a composed config; returns its summary."""
    import pytorch_lightning as pl
    from hydra.core.hydra_config import HydraConfig
    from pytorch_lightning.utilities.model_helpers import is_overridden

    from tasks.checkpoints import load_checkpoint
    from tasks.config_check import check_config
    from tasks.run.guards import check_launch
    from tasks.run.instantiate import build, build_group
    from tasks.run.resume import resume_checkpoint
    from tasks.run.summary import checkpoint_paths, plain_metrics, print_summary, write_summary

    start = time.time()
    check_config(cfg)
    check_launch(cfg)
    out = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build("data", cfg.data)
    model = build("model", cfg.model)
    callbacks = build_group("callbacks", cfg.get("callbacks"))
    loggers = build_group("logger", cfg.get("logger"))
    trainer = build("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    ckpt_path = resume_checkpoint(cfg.get("resume"), out)
    if ckpt_path:
        load_checkpoint(ckpt_path)  # refuses corrupt or code-carrying files before Lightning sees them
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        fit_metrics = plain_metrics(trainer.callback_metrics)  # trainer.test replaces them
        checkpoints = checkpoint_paths(trainer)
        test_metrics = {}
        if cfg.get("test") and is_overridden("test_step", model):
            best = checkpoints.get("best") or checkpoints.get("last")
            test_metrics = plain_metrics(trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)[0])
        exports = {}
        if cfg.get("export") and hasattr(model, "export_artifacts") and trainer.is_global_zero:
            exports = model.export_artifacts(out / "export")
        hydra_cfg = HydraConfig.get()
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
            if exports:
                card = {k: summary[k] for k in ("task_name", "experiment", "run_dir", "test", "overrides")}
                (out / "export" / "card.json").write_text(__import__("json").dumps({**card, "artifacts": exports}, indent=2))
            write_summary(out / "summary.json", summary)
            print_summary(summary)
        return summary
    finally:
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            wandb.finish()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = train(cfg)
    except UserError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        sys.exit(2)
    metric = cfg.get("optimized_metric")
    if metric:  # the value an Optuna sweep optimises
        value = summary["test"].get(metric, summary["final"].get(metric))
        return float(value) if value is not None else None
    return None


if __name__ == "__main__":
    try:
        sys.argv = preflight(sys.argv, CONF_DIR)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
