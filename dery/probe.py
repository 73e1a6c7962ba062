"""Probe images for DeRy's training-free stages: the first images of a split of any
DataModule of this project, normalised as in training, and a fingerprint of them that
keys the on-disk caches."""

from __future__ import annotations

import hashlib
import json
from typing import Iterator

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from tasks.errors import UserError
from tasks.run.instantiate import build

SPLITS = ("train", "val", "test")


class Probe:
    """`num_images` images (all when None) of `split`, in dataset order."""

    def __init__(self, data_cfg: DictConfig, split: str = "train", num_images: int | None = None, batch_size: int = 128):
        if split not in SPLITS:
            raise UserError(f"probe.split='{split}' is not a split; use one of {list(SPLITS)}.")
        self.datamodule = build("data", data_cfg)
        self.datamodule.setup("fit")
        dataset: Dataset = getattr(self.datamodule, f"{split}_set")
        count = len(dataset) if num_images is None else min(int(num_images), len(dataset))
        if count < 2:
            raise UserError(f"The probe needs at least 2 images; the {split} split gives {count}.")
        self.dataset, self.indices, self.batch_size = dataset, list(range(count)), batch_size

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, batch_size: int | None = None, limit: int | None = None) -> Iterator[torch.Tensor]:
        """Normalised image batches (no augmentation), at most `limit` of them."""
        loader = DataLoader(Subset(self.dataset, self.indices), batch_size=batch_size or self.batch_size, shuffle=False,
                            num_workers=getattr(self.datamodule, "num_workers", 0))
        for i, (x, *_) in enumerate(loader):
            if limit is not None and i >= limit:
                return
            yield self.datamodule.normalize(x.float())

    def fingerprint(self) -> str:
        """Content hash of the probe: image tensors, or file list + transform for image folders."""
        digest = hashlib.sha256(json.dumps([list(self.datamodule.mean), list(self.datamodule.std), len(self.indices)]).encode())
        if isinstance(self.dataset, TensorDataset):
            digest.update(self.dataset.tensors[0][: len(self.indices)].contiguous().numpy().tobytes())
        elif hasattr(self.dataset, "items"):
            items = [(str(path), int(label)) for path, label in self.dataset.items[: len(self.indices)]]
            digest.update(json.dumps(items).encode() + repr(getattr(self.dataset, "transform", None)).encode())
        else:
            for x in self.batches():
                digest.update(x.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]
