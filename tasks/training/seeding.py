"""Per-step randomness, one mechanism: `step_key(seed, stream, rank, epoch, batch)` seeds every
stream of draws of a run. StepSeed reseeds the global generators (torch, numpy, random: dropout,
a module's own draws) from the global stream before every training step; `step_generator` and
`batch_generator` give a DataModule or a module a torch.Generator of a named stream of its own
(an augmentation, mixup, the shuffle of an epoch, a method's noise). No stream depends on another
or on the steps before it, so a run resumed after a kill -9 draws what the uninterrupted run drew."""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch
from pytorch_lightning import Callback

from tasks.config.types import Seed

GLOBAL = ""  # the stream of the global generators


def step_key(seed: int, stream: str, rank: int, epoch: int, batch: int) -> int:
    """A 63-bit seed for `stream` at one step of one rank. A named stream adds its CRC-32 to the
    entropy (the global stream adds nothing), so streams never share draws and need no registry:
    a module names its own ("augment/affine", "mixup", "repfusion/timesteps")."""
    entropy = [seed, rank, epoch, batch] + ([zlib.crc32(stream.encode())] if stream else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] % (2**63))


def step_generator(seed: int, stream: str, rank: int, epoch: int, batch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(step_key(seed, stream, rank, epoch, batch))


def batch_generator(trainer, seed: int, device: torch.device, stream: str, batch: int | None = None) -> torch.Generator:
    """The generator of `stream` at the trainer's current training step: its rank, epoch and
    batch index (`batch` where the caller has it, as training_step does)."""
    if batch is None:
        batch = trainer.fit_loop.epoch_loop.batch_progress.current.ready
    return step_generator(seed, stream, trainer.global_rank, trainer.current_epoch, batch, device)


class StepSeed(Callback):
    """Reseeds torch, numpy and random before every training step from the global stream's key,
    so what a step draws from them (noise, timesteps, dropout) never depends on the steps before."""

    def __init__(self, seed: Seed = 0):
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        key = step_key(self.seed, GLOBAL, trainer.global_rank, trainer.current_epoch, batch_idx)
        torch.manual_seed(key)
        np.random.seed(key % (2**32))
        random.seed(key)
