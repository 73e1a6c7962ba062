"""Callbacks of conf/callbacks: the progress display and the stop at the first non-finite loss
(the per-step seed is tasks.training.seeding.StepSeed)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pytorch_lightning.callbacks import Callback, ProgressBar, RichProgressBar
from pytorch_lightning.utilities import rank_zero_info

from tasks.errors import TrainingDiverged


class EpochLines(ProgressBar):
    """For logs without a terminal: one line per epoch with its metrics, instead of bars. The
    line goes through Lightning's rank-zero logger, so a DDP run prints it once, where
    Lightning's own messages go (stderr, or the root logger's handlers when it has any)."""

    def __init__(self):
        super().__init__()
        self._enabled = True
        self._start = time.time()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.time()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self._enabled:
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        seconds = time.time() - self._start
        rank_zero_info(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  ({seconds:.1f} s)")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.val_dataloaders or trainer.limit_val_batches == 0:
            self.on_validation_epoch_end(trainer, pl_module)


def progress_bar(refresh_rate: int = 1):
    """A rich progress bar in a terminal; one line per epoch when output goes to a log."""
    if sys.stdout.isatty():
        return RichProgressBar(refresh_rate=refresh_rate, leave=True)
    return EpochLines()


class FiniteLoss(Callback):
    """Stops the run at the first NaN or infinite loss, before it reaches the weights, with
    the step, the loss terms logged for it and what to try; the last checkpoint (written
    before that step, and refused if its weights are not finite) stays for `resume=`."""

    def __init__(self):
        self.saved_step: int | None = None

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        import torch

        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise TrainingDiverged(self._message(trainer, f"the loss became {float(loss.detach().float().sum())}"))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        import torch

        floats = {
            k: v
            for k, v in checkpoint.get("state_dict", {}).items()
            if isinstance(v, torch.Tensor) and v.is_floating_point()
        }
        # One reduction per tensor and one sync in all: the largest |w| is finite exactly when every w is.
        peaks = [torch.linalg.vector_norm(v.detach(), float("inf")).float() for v in floats.values()]
        ok = torch.isfinite(torch.stack(peaks)) if peaks else torch.ones(0, dtype=torch.bool)
        broken = [] if bool(ok.all()) else [k for k, fine in zip(floats, ok.tolist()) if not fine]
        if broken:
            raise TrainingDiverged(self._message(trainer, f"the weights are no longer finite ({broken[:3]})"))
        self.saved_step = trainer.global_step

    def _message(self, trainer, what: str) -> str:
        import math

        import torch

        terms = {}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/") and isinstance(value, torch.Tensor) and value.numel() == 1:
                terms[key.removesuffix("_step")] = float(value)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(terms.items())) or "none logged yet"
        nonfinite = [k for k, v in terms.items() if not math.isfinite(v)]
        callback = trainer.checkpoint_callback
        last = Path(callback.dirpath) / "last.ckpt" if callback is not None and callback.dirpath else None
        if last is not None and last.is_file():
            kept = (
                f"The last good checkpoint is kept: {last}"
                f"{f' (step {self.saved_step})' if self.saved_step is not None else ''}; continue from it with "
                f"resume={last.parent.parent} after the change."
            )
        else:
            kept = "No checkpoint was written before this step, so start again after the change."
        return (
            f"Training diverged at step {trainer.global_step} (epoch {trainer.current_epoch}): {what}. "
            f"Loss terms at that step: {shown}"
            f"{f' (not finite: {nonfinite})' if nonfinite else ''}. {kept} Try a lower learning rate "
            "(model.optimizer.lr), gradient clipping (trainer.gradient_clip_val=1.0), full precision "
            "(trainer.precision=32-true) if you train in 16-bit, or a smaller weight for the term that blew up."
        )
