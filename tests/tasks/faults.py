"""Faults the error tests inject into real runs: weights set to NaN at a chosen batch of a
chosen epoch (the next loss is NaN), a pickle whose payload would create a marker file, and a
disk that fills up from a chosen epoch on (writes fail with ENOSPC)."""

from __future__ import annotations

import builtins
import errno
import os
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


class FullDisk:
    """A file being written on a disk with `room` bytes left: the write that overflows it stores
    what fits and fails with ENOSPC, as write(2) does on a full disk."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.handle.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.handle.name)
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


class DiskFullFrom(Callback):
    """From the start of epoch `epoch` on, every file the project's writers (tasks.io.files) open
    for writing gets `room` bytes before the disk is full."""

    def __init__(self, epoch: int, room: int = 4096):
        self.epoch, self.room = epoch, room

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch:
            return
        from tasks.io import files

        room = self.room

        def full_open(path, mode="r", *args, **kwargs):
            handle = builtins.open(path, mode, *args, **kwargs)
            return FullDisk(handle, room) if any(c in mode for c in "wax") else handle

        files.open = full_open  # the module's name `open`: the writers there see a full disk
