"""Callback factories used by conf/callbacks."""

from __future__ import annotations

import sys
import time

from pytorch_lightning.callbacks import ProgressBar, RichProgressBar


class EpochLines(ProgressBar):
    """For logs without a terminal: one line per epoch with its metrics, instead of bars."""

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
        if trainer.sanity_checking or not self._enabled or not trainer.is_global_zero:
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  ({time.time() - self._start:.1f} s)", flush=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.val_dataloaders or trainer.limit_val_batches == 0:
            self.on_validation_epoch_end(trainer, pl_module)


def progress_bar(refresh_rate: int = 1):
    """A rich progress bar in a terminal; one line per epoch when output goes to a log."""
    if sys.stdout.isatty():
        return RichProgressBar(refresh_rate=refresh_rate, leave=True)
    return EpochLines()
