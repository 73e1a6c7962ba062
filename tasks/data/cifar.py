"""CIFAR-10 and CIFAR-100 through torchvision (`download=False`: the data must be on disk),
with a fixed-seed validation split held out of the training set."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from tasks.data.base import ImageDataModule
from tasks.data.layout import require_layout
from tasks.errors import UserError

_LAYOUTS = {
    10: ("cifar-10-batches-py", ["data_batch_1", "data_batch_5", "test_batch", "batches.meta"],
         "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract it into data.root)"),
    100: ("cifar-100-python", ["train", "test", "meta"],
          "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (extract it into data.root)"),
}


def _as_tensors(dataset) -> TensorDataset:
    x = torch.from_numpy(np.asarray(dataset.data)).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
    return TensorDataset(x, torch.tensor(dataset.targets, dtype=torch.long))


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

    def __init__(self, root: str, num_classes: int = 10, val_size: int = 5000, split_seed: int = 0, **kwargs):
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
        from torchvision.datasets import CIFAR10, CIFAR100

        cls = CIFAR10 if self.num_classes == 10 else CIFAR100
        try:
            train = _as_tensors(cls(self.root, train=True, download=False))
            test = _as_tensors(cls(self.root, train=False, download=False))
        except RuntimeError as err:  # torchvision's checksum test failed
            raise UserError(f"CIFAR-{self.num_classes} files under '{self.root}' failed torchvision's check ({err}). "
                            f"Re-extract the archive from {_LAYOUTS[self.num_classes][2]}.") from None
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed))
        if self.val_size > 0:
            self.train_set, self.val_set = _ToFloat(train, order[self.val_size:]), _ToFloat(train, order[: self.val_size])
        else:  # the original recipes validate on the test set
            self.train_set, self.val_set = _ToFloat(train), _ToFloat(test)
        self.test_set = _ToFloat(test)
