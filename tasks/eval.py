"""Evaluate an export or a checkpoint: test metrics on any data config, or predictions for a folder.

    kt-eval ckpt=<run dir>/export                      # the test split of the run's own data
    kt-eval ckpt=<run dir> data=fashion_mnist          # the run's best checkpoint, other data
    kt-eval ckpt=<export> mode=predict data_dir=<images>
    kt-eval --help

`python -m tasks.eval` and the checkout's `python eval.py` are the same command.

`ckpt=` takes an export folder or its card (tasks.io.cards.load_card rebuilds it), a run dir or a
Lightning .ckpt inside one (the run's .hydra/config.yaml builds the module; weights only). The
run dir of eval gets summary.json (test metrics under the keys train.py writes) or
predictions.csv, and the job log. It holds no method logic (tasks/run/eval_source.py)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import tasks  # noqa: F401  (registers the resolvers conf/ uses)
from tasks.errors import UserError

log = logging.getLogger("eval")


def _trainer(cfg: DictConfig, loggers: list):
    import warnings

    from tasks.run.instantiate import build
    from tasks.training.callbacks import progress_bar

    # Lightning asks for the run's ModelCheckpoint when a ckpt_path is given: a test does not save, so it is not needed.
    warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
    return build(
        "trainer", cfg.trainer, callbacks=[progress_bar()], logger=loggers or False, enable_checkpointing=False
    )


def test(cfg: DictConfig, source) -> dict:
    """trainer.test of the source on its data's test split; the test metrics."""
    from tasks.run import mismatch
    from tasks.run.eval_source import data_node
    from tasks.run.instantiate import build, build_group
    from tasks.run.summary import plain_metrics

    data = data_node(cfg, source)
    datamodule = build("data", data)
    datamodule.prepare_data()
    datamodule.setup("test")  # missing or broken data files stop here, before Lightning starts
    expected = source.module.hparams.get("num_classes") or getattr(
        getattr(source.module, "net", None), "num_classes", None
    )
    if expected and getattr(datamodule, "num_classes", None) and datamodule.num_classes != expected:
        raise UserError(
            f"The data has {datamodule.num_classes} classes but the network of ckpt={cfg.ckpt} "
            f"predicts {expected}. Test it on data with its own classes."
        )
    loggers = build_group("logger", cfg.get("logger"))
    try:
        trainer = _trainer(cfg, loggers)
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        try:
            tested = trainer.test(source.module, datamodule=datamodule, ckpt_path=source.checkpoint, weights_only=True)
        except Exception as err:  # data of another size or channel count than the network's: named, not a bug
            explained = mismatch.explain(err, datamodule, source.module, OmegaConf.create({"data": data}))
            if explained is not None:
                raise explained from None
            raise
        return {"test": plain_metrics(tested[0])}
    finally:
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            wandb.finish()


def predict(cfg: DictConfig, source, out: Path) -> dict:
    """Class predictions for every image under data_dir, written atomically to predictions.csv."""
    from tasks.io import files
    from tasks.run.predict import class_scores, image_loader, list_images, predictions_csv

    root = Path(str(cfg.data_dir)).expanduser()
    paths = list_images(root)
    trainer = _trainer(cfg, [])
    if trainer.world_size > 1:  # trainer.predict returns each process's share only
        raise UserError(
            f"mode=predict runs on one device; this trainer has {trainer.world_size} processes. "
            "Set trainer.devices=1 trainer.num_nodes=1."
        )
    outputs = trainer.predict(
        source.module,
        dataloaders=image_loader(paths, source.preprocessing, cfg.batch_size),
        ckpt_path=source.checkpoint,
        weights_only=True,
    )
    logits = class_scores(outputs, len(paths))
    text = predictions_csv(paths, root, logits, cfg.top_k, source.class_names)
    csv_path = files.write_text(out / "predictions.csv", text)  # a temp file, then a rename
    return {"predictions": str(csv_path), "images": len(paths), "data_dir": str(cfg.data_dir)}


def evaluate(cfg: DictConfig) -> dict:
    """Run one eval job described by a composed conf/eval.yaml; returns its summary."""
    import pytorch_lightning as pl
    import torch
    from hydra.core.hydra_config import HydraConfig
    from pytorch_lightning.utilities import rank_zero_only

    from tasks.config.check import check_config
    from tasks.run.eval_source import resolve
    from tasks.run.launch import apply_threads
    from tasks.run.summary import print_summary, write_summary

    start = time.time()
    check_config(cfg, ("data", "trainer", "logger"), command="eval")  # preflight did this for the command line
    apply_threads(cfg)
    if cfg.mode == "test" and cfg.get("data_dir"):
        raise UserError(
            f"data_dir={cfg.data_dir} is read by mode=predict only; add mode=predict, or drop data_dir "
            "to test on data=<group>."
        )
    if cfg.mode == "predict" and not cfg.get("data_dir"):
        raise UserError("mode=predict needs the folder of images: data_dir=<folder>.")
    out = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    source = resolve(str(cfg.ckpt))
    log.info(
        "ckpt=%s: %s %s%s", cfg.ckpt, source.kind, source.path, f" (run {source.run_dir})" if source.run_dir else ""
    )
    result = test(cfg, source) if cfg.mode == "test" else predict(cfg, source, out)
    log.info("%s", result.get("test") or f"{result.get('images')} predictions in {result.get('predictions')}")
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    summary = {
        "task_name": cfg.task_name,
        "mode": cfg.mode,
        "ckpt": str(cfg.ckpt),
        "source": source.describe(),
        "data": choices.get("data") or ("the run's own" if cfg.mode == "test" else None),
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "seed": cfg.seed,
        "threads": torch.get_num_threads(),
        "run_dir": str(out),
        **result,
        "wall_time_s": time.time() - start,
        "finished": datetime.now().isoformat(timespec="seconds"),
    }
    if rank_zero_only.rank == 0:  # one summary under DDP (the test metrics are synced across processes)
        write_summary(out / "summary.json", summary)
        print_summary(summary)
        if "predictions" in summary:
            print(f"{summary['images']} predictions: {summary['predictions']}")
    return summary


def main(cfg: DictConfig) -> None:
    """The task of `kt-eval ...` (tasks.run.launch guards it: a user mistake is one message and
    exit 2, and a failed start leaves no run dir; a bug is one line with the log path, exit 1)."""
    evaluate(cfg)


def command(entry: str = "kt-eval") -> None:
    """The command line: composed and checked once, before anything is written."""
    from tasks.run.launch import run_command

    run_command(main, "eval", entry=entry)


if __name__ == "__main__":
    command("tasks.eval")
