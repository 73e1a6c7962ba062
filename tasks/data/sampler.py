"""A shuffling sampler whose order depends only on (seed, epoch) (its stream of
tasks.training.seeding, the same on every rank), so resuming a run replays the exact batches of an
uninterrupted one."""

from __future__ import annotations

import torch
from torch.utils.data import RandomSampler

from tasks.training.seeding import step_generator


class EpochShuffleSampler(RandomSampler):
    """A RandomSampler (so Lightning swaps in a DistributedSampler under DDP) seeded per epoch."""

    def __init__(self, data_source, seed: int = 0):
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __iter__(self):
        generator = step_generator(self.seed, "data/shuffle", 0, self.epoch, 0, torch.device("cpu"))
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()
