"""One seeding mechanism: step_key(seed, stream, rank, epoch, batch) seeds the global generators
(StepSeed), every named stream of a DataModule or a module (batch_generator, step_generator) and the
shuffle of an epoch; every argument changes the key, and the global stream keeps StepSeed's keys."""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import numpy as np
import torch

from tasks.data.sampler import EpochShuffleSampler
from tasks.training.seeding import GLOBAL, StepSeed, batch_generator, step_generator, step_key


def test_the_global_stream_keeps_the_keys_stepseed_had():
    reference = np.random.SeedSequence([7, 1, 2, 3]).generate_state(1, dtype=np.uint64)[0] % (2**63)
    assert step_key(7, GLOBAL, 1, 2, 3) == int(reference)
    assert step_key(0, GLOBAL, 0, 0, 0) == 6569863346532939966  # golden: StepSeed._step_key(0, 0, 0, 0) before streams


def test_every_argument_changes_the_key():
    grid = itertools.product((0, 1), (GLOBAL, "augment/affine", "augment/mixup"), (0, 1), (0, 1), (0, 1))
    keys = [step_key(*args) for args in grid]
    assert len(set(keys)) == len(keys) == 48 and all(0 <= k < 2**63 for k in keys)


def _trainer(rank: int, epoch: int, ready: int) -> SimpleNamespace:
    progress = SimpleNamespace(current=SimpleNamespace(ready=ready))
    return SimpleNamespace(
        global_rank=rank,
        current_epoch=epoch,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
    )


def _draw(generator: torch.Generator) -> list[float]:
    return torch.rand(3, generator=generator).tolist()


def test_batch_generator_reads_rank_epoch_and_batch_from_the_trainer():
    cpu = torch.device("cpu")
    expected = _draw(step_generator(5, "augment/affine", 1, 2, 3, cpu))
    assert _draw(batch_generator(_trainer(1, 2, 3), 5, cpu, "augment/affine")) == expected
    assert _draw(batch_generator(_trainer(1, 2, 9), 5, cpu, "augment/affine", batch=3)) == expected
    assert _draw(batch_generator(_trainer(1, 2, 3), 5, cpu, "augment/erasing")) != expected


def test_stepseed_reseeds_the_global_generators_from_the_global_stream():
    callback, trainer = StepSeed(seed=11), _trainer(1, 4, 0)
    callback.on_train_batch_start(trainer, None, None, batch_idx=6)
    drawn = (torch.rand(2).tolist(), np.random.rand(), random.random())
    key = step_key(11, GLOBAL, 1, 4, 6)
    torch.manual_seed(key)
    np.random.seed(key % (2**32))
    random.seed(key)
    assert drawn == (torch.rand(2).tolist(), np.random.rand(), random.random())


def test_the_shuffle_of_an_epoch_is_its_stream_and_repeats():
    sampler = EpochShuffleSampler(range(10), seed=3)
    sampler.set_epoch(2)
    order = list(sampler)
    reference = torch.randperm(10, generator=step_generator(3, "data/shuffle", 0, 2, 0, torch.device("cpu"))).tolist()
    assert order == reference == list(sampler) and sorted(order) == list(range(10))
    sampler.set_epoch(3)
    assert list(sampler) != order
