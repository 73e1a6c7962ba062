"""Faults the error tests inject into real runs: weights set to NaN at a chosen batch of a
chosen epoch (the next loss is NaN), and a pickle whose payload would create a marker file."""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning.callbacks import Callback


class PoisonAt(Callback):
    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            with torch.no_grad():
                next(p for p in pl_module.parameters() if p.requires_grad).fill_(float("nan"))


class Payload:
    """Unpickling this runs Path(marker).touch(): proof that a loader executed pickled code."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def evil_checkpoint(path: Path, marker: Path, state: dict | None = None) -> Path:
    """A torch.save file holding a state dict plus a code-carrying object."""
    torch.save({"state_dict": state or {"weight": torch.zeros(2)}, "payload": Payload(marker)}, path)
    return path
