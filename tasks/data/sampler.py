"""A shuffling sampler whose order depends only on (seed, epoch), so resuming a run
replays the exact batches of an uninterrupted one."""

from __future__ import annotations

import torch
from torch.utils.data import RandomSampler


class EpochShuffleSampler(RandomSampler):
    """A RandomSampler (so Lightning swaps in a DistributedSampler under DDP) seeded per epoch."""

    def __init__(self, data_source, seed: int = 0):
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()
