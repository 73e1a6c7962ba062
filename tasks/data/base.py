"""ImageDataModule: the shared base of every DataModule. Datasets yield images in [0, 1];
the module augments training batches on the device and applies its normalisation, which
it publishes (`mean`, `std`) so teachers can map inputs back to their own range."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from tasks.config.types import AtLeastOne, Count, Seed
from tasks.data.sampler import EpochShuffleSampler
from tasks.data.toolbox import RandAugment, RandomErasing
from tasks.training.seeding import batch_generator


class ImageDataModule(pl.LightningDataModule):
    num_classes: int = 0
    image_size: int = 32
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    std: Sequence[float] = (0.5, 0.5, 0.5)

    def __init__(
        self,
        batch_size: AtLeastOne = 128,
        eval_batch_size: AtLeastOne | None = None,
        num_workers: Count = 0,
        pin_memory: bool = False,
        seed: Seed = 0,
        batch_augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        rand_augment: RandAugment | None = None,
        random_erasing: RandomErasing | None = None,
    ):
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.batch_augment = batch_augment
        self.mean = tuple(mean) if mean is not None else tuple(self.mean)
        self.std = tuple(std) if std is not None else tuple(self.std)
        self.rand_augment = rand_augment  # timm's RandAugment, after batch_augment, on [0, 1] images
        self.random_erasing = random_erasing  # timm's RandomErasing, on the normalised batch
        if rand_augment is not None and rand_augment.mean is None:
            rand_augment.mean = self.mean
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # --- normalisation -------------------------------------------------------------
    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1)
        return (
            torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(shape),
            torch.tensor(self.std, device=x.device, dtype=x.dtype).view(shape),
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return x * std + mean

    # --- loaders -------------------------------------------------------------------
    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() did not build this split.")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochShuffleSampler(dataset, self.seed) if train else None,
            drop_last=train and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    # --- device-side augmentation and normalisation -------------------------------
    def _augment_generator(self, device: torch.device, stream: str = "augment/affine") -> torch.Generator:
        """Seeded by (seed, stream, rank, epoch, batch index): identical after a resume."""
        return batch_generator(self.trainer, self.seed, device, stream)

    def augment(self, batch: Any) -> Any:
        """Train-time augmentation of a batch of [0, 1] images; dense tasks override it to
        move their targets with the image."""
        x, *rest = batch
        return (self.batch_augment(x, self._augment_generator(x.device)), *rest)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        training = self.trainer is not None and self.trainer.training
        if training and self.batch_augment is not None:
            batch = self.augment(batch)
        x, *rest = batch
        if training and self.rand_augment is not None:
            x = self.rand_augment(x, self._augment_generator(x.device, "augment/randaugment"))
        x = self.normalize(x)
        if training and self.random_erasing is not None:
            x = self.random_erasing(x, self._augment_generator(x.device, "augment/erasing"))
        return (x, *rest)
