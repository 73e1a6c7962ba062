"""Probe images for DeRy's training-free stages: a class-stratified selection of a split of
any DataModule of this project, without augmentation and normalised as in training, and a
fingerprint of them that keys the on-disk caches.

Stratified: every class in its own seeded random order, then the classes taken in turn, so
any `num_images` (and every consecutive batch of them) holds the classes in equal shares,
where the first images of a class-sorted split (ImageNet's val) would hold only the first
classes. Without augmentation: a split whose dataset transforms its images (image folders)
is read through the data module's evaluation transform; device-side batch augmentation is
never applied here."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from tasks.errors import UserError
from tasks.run.instantiate import build

SPLITS = ("train", "val", "test")


def labels_of(dataset: Dataset) -> torch.Tensor:
    """The class label of every item, without decoding images where the dataset lists them."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].long()
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    if hasattr(dataset, "items"):
        return torch.tensor([int(label) for _, label in dataset.items])
    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets).long()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])


def stratified_order(labels: torch.Tensor, count: int, seed: int = 0) -> list[int]:
    """`count` indices: each class shuffled with `seed`, then one of every class in turn."""
    g = torch.Generator().manual_seed(seed)
    queues = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        queues.append(members[torch.randperm(len(members), generator=g)].tolist())
    order: list[int] = []
    depth = 0
    while len(order) < count:
        order += [q[depth] for q in queues if depth < len(q)][: count - len(order)]
        depth += 1
    return order


def without_augmentation(dataset: Dataset, datamodule) -> Dataset:
    """The dataset read through the evaluation transform (a shallow copy) when it has its own."""
    eval_set = getattr(datamodule, "val_set", None) or getattr(datamodule, "test_set", None)
    has_own = hasattr(dataset, "transform") and eval_set is not None and hasattr(eval_set, "transform")
    if has_own and eval_set is not dataset:
        dataset = copy.copy(dataset)
        dataset.transform = eval_set.transform
    return dataset


class Probe:
    """`num_images` (all when None) class-stratified images of `split`, not augmented."""

    def __init__(
        self,
        data_cfg: DictConfig,
        split: str = "train",
        num_images: int | None = None,
        batch_size: int = 128,
        seed: int = 0,
    ):
        if split not in SPLITS:
            raise UserError(f"probe.split='{split}' is not a split; use one of {list(SPLITS)}.")
        self.datamodule = build("data", data_cfg)
        self.datamodule.setup("fit")
        dataset: Dataset = without_augmentation(getattr(self.datamodule, f"{split}_set"), self.datamodule)
        count = len(dataset) if num_images is None else min(int(num_images), len(dataset))
        if count < 2:
            raise UserError(f"The probe needs at least 2 images; the {split} split gives {count}.")
        self.labels = labels_of(dataset)
        self.dataset, self.batch_size = dataset, batch_size
        self.indices = stratified_order(self.labels, count, seed)

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, batch_size: int | None = None, limit: int | None = None) -> Iterator[torch.Tensor]:
        """Normalised image batches (no augmentation), at most `limit` of them."""
        loader = DataLoader(
            Subset(self.dataset, self.indices),
            batch_size=batch_size or self.batch_size,
            shuffle=False,
            num_workers=getattr(self.datamodule, "num_workers", 0),
        )
        for i, (x, *_) in enumerate(loader):
            if limit is not None and i >= limit:
                return
            yield self.datamodule.normalize(x.float())

    def fingerprint(self) -> str:
        """Content hash of the probe: image tensors, or file list + transform for image folders."""
        stats = [list(self.datamodule.mean), list(self.datamodule.std), self.indices]
        digest = hashlib.sha256(json.dumps(stats).encode())
        if isinstance(self.dataset, TensorDataset):
            digest.update(self.dataset.tensors[0][self.indices].contiguous().numpy().tobytes())
        elif hasattr(self.dataset, "items"):
            items = [(str(self.dataset.items[i][0]), int(self.dataset.items[i][1])) for i in self.indices]
            digest.update(json.dumps(items).encode() + repr(getattr(self.dataset, "transform", None)).encode())
        else:
            for x in self.batches():
                digest.update(x.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]
