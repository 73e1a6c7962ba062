"""Training throughput of any run's recipe: images/s of its training step and the achieved
TFLOP/s, counted by torch's FlopCounterMode over one step (forward + backward, the frozen
teacher included), against the accelerator's bf16 peak. The recipe is re-composed from
the run's own `.hydra/overrides.yaml`, so every method is measured through its own
LightningModule and DataModule, at the recipe's batch size and at the largest that fits.

    python -m benchmarks.gpu.throughput <run dir> [--batch-sizes 128,max] [--channels-last] [--compile]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.flop_counter import FlopCounterMode

H200_BF16_PEAK_TFLOPS = 790.0  # dense bf16, measured at 769-798 on 8192^3 products (device notes)


def compose_run(run_dir: Path, extra: list[str]):
    """The config a run was made with, plus `extra` overrides, as train.py would compose it."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import tasks  # noqa: F401  (resolvers)
    from tasks.config.location import CONF_DIR

    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    overrides = [o for o in overrides if not o.startswith(("hydra.", "resume="))] + extra
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    scratch = run_dir / "throughput"
    with open_dict(cfg):
        cfg.paths.output_dir = str(scratch)
        cfg.hydra.runtime.output_dir = str(scratch)
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "throughput"
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


class StepTimer(pl.Callback):
    """The wall time of every training step, measured from the end of one step to the end of
    the next with the device synchronised, so loading, transfer and device augmentation count;
    with `count_flops`, the first step (forward, backward, update) runs under FlopCounterMode."""

    def __init__(self, count_flops: bool = False):
        self.ends: list[float] = []
        self.flops: float | None = None
        self.batches = 0  # fit() sets it: training stops after this many batches (optimiser steps can be more)
        self._counter = FlopCounterMode(display=False) if count_flops else None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self._counter is not None and not self.ends:
            self._counter.__enter__()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        if self._counter is not None and not self.ends:
            self._counter.__exit__(None, None, None)
            self.flops = float(self._counter.get_total_flops())
        self.ends.append(time.perf_counter())
        if len(self.ends) >= self.batches:
            trainer.should_stop = True

    def step_times(self, warmup: int) -> list[float]:
        return [b - a for a, b in zip(self.ends[:-1], self.ends[1:])][warmup:]


class Recipe:
    """A run's recipe composed once, with its DataModule built once (its data is loaded once for
    every batch size and option timed)."""

    def __init__(self, run_dir: Path, extra: list[str]):
        from hydra.core.hydra_config import HydraConfig

        from tasks.run.instantiate import build

        self.run_dir = run_dir
        self.cfg = compose_run(run_dir, extra)
        self.hydra = HydraConfig.instance().cfg  # set again before each fit: several recipes are timed in turn
        self.batch_size = int(self.cfg.data.batch_size)
        self.datamodule = build("data", self.cfg.data)

    def fit(
        self,
        batch_size: int,
        batches: int,
        channels_last: bool = False,
        compile_model: bool = False,
        timer: StepTimer | None = None,
    ) -> StepTimer:
        """`batches` training batches of the recipe at this batch size (by batches, not optimiser
        steps: RepFusion steps its policy optimiser too)."""
        from hydra.core.hydra_config import HydraConfig

        from tasks.run.instantiate import build

        HydraConfig.instance().cfg = self.hydra
        pl.seed_everything(0, verbose=False)
        self.datamodule.batch_size = self.datamodule.eval_batch_size = batch_size
        model = build("model", self.cfg.model)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if compile_model:
            model = torch.compile(model)
        timer = timer or StepTimer()
        timer.batches = batches
        trainer = pl.Trainer(
            accelerator=self.cfg.trainer.accelerator,
            devices=1,
            precision=self.cfg.trainer.precision,
            max_epochs=10_000,
            min_epochs=0,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
            default_root_dir=self.cfg.paths.output_dir,
        )
        trainer.fit(model, datamodule=self.datamodule)
        return timer


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure(
    recipe: Recipe,
    batch_size: int,
    steps: int = 20,
    warmup: int = 5,
    channels_last: bool = False,
    compile_model: bool = False,
    flops: float | None = None,
    peak_tflops: float = H200_BF16_PEAK_TFLOPS,
) -> dict:
    """images/s and TFLOP/s of the recipe's training step at one batch size: the median of
    `steps` steps after `warmup`. The FLOPs are counted in eager mode (the first step here, or
    `flops` from an earlier eager count at this batch size: options change no FLOPs)."""
    if flops is None and compile_model:  # compiled kernels escape the counter: count one eager step first
        flops = recipe.fit(batch_size, 1, timer=StepTimer(count_flops=True)).flops
    timer = StepTimer(count_flops=flops is None)
    recipe.fit(batch_size, warmup + steps + 1, channels_last, compile_model, timer)
    flops = timer.flops if flops is None else flops
    step_s = statistics.median(timer.step_times(warmup))
    free_memory()
    tflops = flops / step_s / 1e12
    return {
        "batch_size": batch_size,
        "images_per_s": batch_size / step_s,
        "step_s": step_s,
        "flops_per_step": flops,
        "tflops": tflops,
        "peak_fraction": tflops / peak_tflops,
        "channels_last": channels_last,
        "compile": compile_model,
    }


def largest_batch(recipe: Recipe, start: int, cap: int) -> int:
    """The largest power-of-two multiple of `start` (up to `cap`) whose training step fits in memory."""
    size = start
    while size * 2 <= cap:
        try:
            recipe.fit(size * 2, 2)
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            free_memory()
        size *= 2
    return size


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--batch-sizes", default="recipe,max", help="comma list of sizes, 'recipe' and 'max'")
    parser.add_argument("--max-cap", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra overrides")
    args = parser.parse_args(argv)
    recipe = Recipe(args.run_dir, args.override)
    sizes = [
        recipe.batch_size
        if item == "recipe"
        else largest_batch(recipe, recipe.batch_size, args.max_cap)
        if item == "max"
        else int(item)
        for item in args.batch_sizes.split(",")
    ]
    results = [
        measure(recipe, b, args.steps, channels_last=args.channels_last, compile_model=args.compile)
        for b in dict.fromkeys(sizes)
    ]
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
