"""The embedded default data set: scikit-learn's bundled digits (1,797 real 8x8 scans of
handwritten digits, 10 classes), upsampled to 32x32 RGB, with a fixed-seed stratified
train/val/test split. No download, no network."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from tasks.config.types import AtLeastOne, Choices, Count, Probability, Seed
from tasks.data.base import ImageDataModule
from tasks.data.labels import LabelBudget


def load_digit_images(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 3, S, S) floats in [0, 1] and (N,) int64 labels."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=image_size, mode="bilinear", align_corners=False).clamp(0, 1)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.tensor(digits.target, dtype=torch.long)


def split_indices(
    labels: torch.Tensor, val_fraction: float, test_fraction: float, split_seed: int
) -> dict[str, list[int]]:
    """Stratified train/val/test indices, fixed by `split_seed`."""
    idx = list(range(len(labels)))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=split_seed)
    val_share = val_fraction / (1 - test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=split_seed)
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


class DigitsDataModule(ImageDataModule):
    num_classes = 10
    # Statistics of the upsampled images (grey replicated to RGB).
    mean = (0.3053, 0.3053, 0.3053)
    std = (0.3236, 0.3236, 0.3236)

    def __init__(
        self,
        image_size: AtLeastOne = 32,
        val_fraction: Probability = 0.15,
        test_fraction: Probability = 0.15,
        split_seed: Seed = 0,
        train_subset: int | None = None,
        labels_per_class: Count | None = None,
        label_seed: Seed = 0,
        unlabelled: Annotated[str, Choices("tasks.data.labels.UNLABELLED_MODES")] = "drop",
        **kwargs,
    ):
        """`train_subset`: keep a fixed stratified subset of this many training images (few-label
        runs); val and test do not change. `labels_per_class`: only this many labelled images
        per class of the training pool, a stratified draw by `label_seed`; the rest is dropped
        or kept with label -1 (`unlabelled: drop|mask`, tasks.data.labels)."""
        super().__init__(**kwargs)
        self.label_budget = LabelBudget(labels_per_class, label_seed, unlabelled)
        self.labels_used: dict | None = None  # set by setup: the summary records it
        self.train_subset = train_subset
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = load_digit_images(self.image_size)
        splits = split_indices(y, self.val_fraction, self.test_fraction, self.split_seed)
        if self.train_subset is not None and self.train_subset < len(splits["train"]):
            train = splits["train"]
            kept, _ = train_test_split(
                train, train_size=self.train_subset, stratify=y[train], random_state=self.split_seed
            )
            splits["train"] = sorted(kept)
        self.val_set, self.test_set = (TensorDataset(x[splits[s]], y[splits[s]]) for s in ("val", "test"))
        train = torch.as_tensor(np.asarray(splits["train"]), dtype=torch.long)
        pool, pool_labels, self.labels_used = self.label_budget.apply(train, y[train])
        self.train_set = TensorDataset(x[pool], pool_labels)
