"""Images without labels, for label-free stage 1: every image file below a folder, in any
layout (sub-folders are not classes), as the original read CelebA-HQ-img for its dense
pre-training. A fixed-seed share is held out for validation (the distillation loss only).
Batches are (images,): there is nothing else to give."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from tasks.config.types import AtLeastOne, Probability, Seed
from tasks.data.base import ImageDataModule
from tasks.errors import UserError
from tasks.io.files import read_image

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class ImageFiles(Dataset):
    def __init__(self, files: list[Path], transform):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        return (self.transform(read_image(self.files[i], "Image")),)


class UnlabeledFolderDataModule(ImageDataModule):
    def __init__(
        self,
        root: str,
        image_size: AtLeastOne = 32,
        val_fraction: Probability = 0.05,
        split_seed: Seed = 0,
        flip: bool = False,
        **kwargs,
    ):
        """`root`: a folder of images (searched recursively). `flip`: random horizontal flips
        of training images (the original's face recipe; wrong for digits or text)."""
        super().__init__(**kwargs)
        self.root, self.image_size, self.split_seed, self.flip = Path(root).expanduser(), image_size, split_seed, flip
        if not self.root.is_dir():
            raise UserError(
                f"data.root={root} is not a folder. Label-free stage 1 reads every image below a folder "
                f"(any layout, {sorted(EXTENSIONS)}); set data.root=<that folder>."
            )
        if not 0.0 <= val_fraction < 1.0:
            raise UserError(f"data.val_fraction={val_fraction} must be in [0, 1).")
        self.val_fraction = val_fraction

    def _transform(self, train: bool) -> v2.Compose:
        steps = [v2.ToImage(), v2.Resize(self.image_size, antialias=True), v2.CenterCrop(self.image_size)]
        if train and self.flip:
            steps.append(v2.RandomHorizontalFlip())
        return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True)])

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files = sorted(f for f in self.root.rglob("*") if f.suffix.lower() in EXTENSIONS)
        if len(files) < 2:
            raise UserError(
                f"data.root={self.root} holds {len(files)} image file(s) ({sorted(EXTENSIONS)}); "
                "label-free stage 1 needs a folder of images."
            )
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        held = max(1, round(self.val_fraction * len(files))) if self.val_fraction > 0 else 0
        val = sorted(files[i] for i in order[:held])
        train = sorted(files[i] for i in order[held:])
        self.train_set = ImageFiles(train, self._transform(train=True))
        self.val_set = ImageFiles(val, self._transform(train=False)) if val else None
        self.test_set = self.val_set

    def val_dataloader(self):
        return self._loader(self.val_set, train=False) if self.val_set is not None else []
