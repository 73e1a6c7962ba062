"""Training throughput of any run's recipe: images/s of its training step and the achieved
TFLOP/s, counted by torch's FlopCounterMode over one step (forward + backward, the frozen
teacher included), against the accelerator's bf16 peak. The recipe is re-composed from
the run's own `.hydra/overrides.yaml`, so every method is measured through its own
LightningModule and DataModule, at the recipe's batch size and at the largest that fits.

    python -m benchmarks.gpu.throughput <run dir> [--batch-sizes 128,max] [--channels-last] [--compile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

H200_BF16_PEAK_TFLOPS = 790.0  # dense bf16, measured at 769-798 on 8192^3 products (device notes)
ROOT = Path(__file__).resolve().parents[2]


def compose_run(run_dir: Path, extra: list[str]):
    """The config a run was made with, plus `extra` overrides, as train.py would compose it."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import tasks  # noqa: F401  (resolvers)

    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    overrides = [o for o in overrides if not o.startswith(("hydra.", "resume="))] + extra
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
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
    """Wall time of every training step (batch transfer and device augmentation included),
    with the device synchronised at both ends."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    @staticmethod
    def _sync(module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._sync(module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._sync(module)
        self.times.append(time.perf_counter() - self._start)


def _fit(cfg, steps: int, channels_last: bool, compile_model: bool, callbacks=()):
    from tasks.run.instantiate import build

    pl.seed_everything(0, verbose=False)
    datamodule = build("data", cfg.data)
    model = build("model", cfg.model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_model:
        model = torch.compile(model)
    trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision,
                         max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=list(callbacks), default_root_dir=cfg.paths.output_dir)
    trainer.fit(model, datamodule=datamodule)
    return trainer


def step_flops(cfg) -> float:
    """FLOPs of one training step (eager mode), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        _fit(cfg, 1, channels_last=False, compile_model=False)
    return float(counter.get_total_flops())


def measure(run_dir: Path, batch_size: int, extra: list[str], steps: int = 20, warmup: int = 5,
            channels_last: bool = False, compile_model: bool = False, peak_tflops: float = H200_BF16_PEAK_TFLOPS) -> dict:
    cfg = compose_run(run_dir, [f"data.batch_size={batch_size}", *extra])
    flops = step_flops(cfg)
    timer = StepTimer()
    _fit(cfg, warmup + steps, channels_last, compile_model, callbacks=[timer])
    step_s = statistics.median(timer.times[warmup:] or timer.times)
    tflops = flops / step_s / 1e12
    return {"batch_size": batch_size, "images_per_s": batch_size / step_s, "step_s": step_s,
            "flops_per_step": flops, "tflops": tflops, "peak_fraction": tflops / peak_tflops,
            "channels_last": channels_last, "compile": compile_model}


def largest_batch(run_dir: Path, start: int, extra: list[str], cap: int) -> int:
    """The largest power-of-two multiple of `start` (up to `cap`) whose training step fits in memory."""
    fits, size = start, start
    while size * 2 <= cap:
        try:
            _fit(compose_run(run_dir, [f"data.batch_size={size * 2}", *extra]), 2, False, False)
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        size *= 2
        fits = size
    return fits


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--batch-sizes", default="recipe,max", help="comma list of sizes, 'recipe' and 'max'")
    parser.add_argument("--max-cap", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra overrides")
    args = parser.parse_args(argv)
    recipe = int(compose_run(args.run_dir, args.override).data.batch_size)
    sizes = []
    for item in args.batch_sizes.split(","):
        sizes.append(recipe if item == "recipe" else largest_batch(args.run_dir, recipe, args.override, args.max_cap)
                     if item == "max" else int(item))
    results = [measure(args.run_dir, b, args.override, args.steps, channels_last=args.channels_last,
                       compile_model=args.compile) for b in dict.fromkeys(sizes)]
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
