"""Per-step randomness as a function of (seed, rank, epoch, batch): StepSeed reseeds the global
generators before every training step, and batch_generator gives a module its own stream of
draws. Either way a run resumed after a kill -9 draws what the uninterrupted run drew."""

from __future__ import annotations

import torch
from pytorch_lightning import Callback

from tasks.config.types import Seed


def batch_generator(trainer, seed: int, device: torch.device, stream: int = 0) -> torch.Generator:
    """A generator seeded by (seed, stream, rank, epoch, batch index): the same draws after a resume."""
    batch_idx = trainer.fit_loop.epoch_loop.batch_progress.current.ready
    seed = seed + stream * 2**40  # stream 0 keeps the draws of the geometric augmentation as they were
    key = ((seed * 1_000_003 + trainer.global_rank) * 100_003 + trainer.current_epoch) * 1_000_003 + batch_idx
    return torch.Generator(device=device).manual_seed(key % (2**63))


def _step_key(seed: int, rank: int, epoch: int, batch_idx: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([seed, rank, epoch, batch_idx]).generate_state(1, dtype=np.uint64)[0] % (2**63))


class StepSeed(Callback):
    """Reseeds torch, numpy and random before every training step from (seed, rank, epoch,
    batch index), so what a step draws (noise, timesteps, dropout) never depends on the
    steps before it: a run resumed after a kill -9 draws what the uninterrupted run drew."""

    def __init__(self, seed: Seed = 0):
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        import random

        import numpy as np
        import torch

        key = _step_key(self.seed, trainer.global_rank, trainer.current_epoch, batch_idx)
        torch.manual_seed(key)
        np.random.seed(key % (2**32))
        random.seed(key)
