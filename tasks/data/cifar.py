"""CIFAR-10 and CIFAR-100 from the python archives on disk (nothing is downloaded), with a
fixed-seed validation split held out of the training set. The batches are pickles: they are
checked against torchvision's md5 sums, then read by tasks.io.files.read_array_pickle, which
imports nothing but numpy's array constructors, so a planted pickle never runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from tasks.config.types import Count, Seed
from tasks.data.base import ImageDataModule
from tasks.data.layout import require_layout
from tasks.errors import UserError
from tasks.io import files

_LAYOUTS = {
    10: (
        "cifar-10-batches-py",
        ["data_batch_1", "data_batch_5", "test_batch", "batches.meta"],
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract it into data.root)",
    ),
    100: (
        "cifar-100-python",
        ["train", "test", "meta"],
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (extract it into data.root)",
    ),
}


def _read_split(root: str, num_classes: int, train: bool) -> TensorDataset:
    """One split as uint8 NCHW images and labels, the way torchvision's CIFAR classes read it."""
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets import cifar as tv_cifar

    cls = CIFAR10 if num_classes == 10 else CIFAR100
    folder = Path(root) / cls.base_folder
    images, labels = [], []
    for name, md5 in cls.train_list if train else cls.test_list:
        path = folder / name
        if not tv_cifar.check_integrity(str(path), md5):
            raise UserError(
                f"CIFAR-{num_classes} file {path} failed the md5 check against the published archive. "
                f"Re-extract the archive from {_LAYOUTS[num_classes][2]}."
            )
        entry = files.read_array_pickle(path, f"CIFAR-{num_classes} batch")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    return TensorDataset(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long))


class _ToFloat(Dataset):
    """uint8 images to [0, 1] floats, lazily (keeps 50k images at 150 MB)."""

    def __init__(self, base: TensorDataset, indices: torch.Tensor | None = None):
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.base)

    def __getitem__(self, i):
        x, y = self.base[int(self.indices[i]) if self.indices is not None else i]
        return x.float() / 255.0, y


class CIFARDataModule(ImageDataModule):
    image_size = 32

    def __init__(self, root: str, num_classes: Count = 10, val_size: Count = 5000, split_seed: Seed = 0, **kwargs):
        if num_classes not in _LAYOUTS:
            raise ValueError(f"num_classes must be 10 or 100, got {num_classes}")
        folder, files, source = _LAYOUTS[num_classes]
        layout = f"  {root}/\n    {folder}/\n" + "".join(f"      {f}\n" for f in files)
        require_layout(root, [f"{folder}/{f}" for f in files], f"CIFAR-{num_classes}", layout, source)
        super().__init__(**kwargs)
        self.root, self.num_classes, self.val_size, self.split_seed = root, num_classes, val_size, split_seed
        if num_classes == 10:
            self.mean, self.std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
        else:
            self.mean, self.std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = _read_split(self.root, self.num_classes, train=True)
        test = _read_split(self.root, self.num_classes, train=False)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed))
        if self.val_size > 0:
            self.train_set, self.val_set = (
                _ToFloat(train, order[self.val_size :]),
                _ToFloat(train, order[: self.val_size]),
            )
        else:  # the original recipes validate on the test set
            self.train_set, self.val_set = _ToFloat(train), _ToFloat(test)
        self.test_set = _ToFloat(test)
