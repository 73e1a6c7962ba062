"""A callback for the kill -9 tests: at a chosen batch of a chosen epoch it writes a marker file
and then waits, so the test can SIGKILL the real process at a known point inside an epoch."""

from __future__ import annotations

import time
from pathlib import Path

from pytorch_lightning.callbacks import Callback


class PauseAt(Callback):
    def __init__(self, epoch: int, batch: int, marker: str, seconds: float = 600.0):
        self.epoch, self.batch, self.marker, self.seconds = epoch, batch, Path(marker), seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            self.marker.write_text(f"{trainer.current_epoch} {batch_idx} {trainer.global_step}")
            time.sleep(self.seconds)  # the test kills the process here


class WaitForSignal(Callback):
    """At a chosen batch of a chosen epoch: write a marker file, then wait (at most `seconds`)
    until the process has received the signal the test sends. SIGINT raises where it waits;
    SIGTERM is left to Lightning, which stops the loop after this batch."""

    def __init__(self, epoch: int, batch: int, marker: str, seconds: float = 300.0):
        self.epoch, self.batch, self.marker, self.seconds = epoch, batch, Path(marker), seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        from tasks.run import interruption

        if (trainer.current_epoch, batch_idx) != (self.epoch, self.batch) or self.marker.exists():
            return
        self.marker.write_text(f"{trainer.current_epoch} {batch_idx} {trainer.global_step}")
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline and not trainer.received_sigterm and interruption.received() is None:
            time.sleep(0.05)
