"""Fashion-MNIST (Zalando Research): 70,000 real 28x28 grey product photos in 10 classes,
read from the four original IDX files. The official split is kept (60,000 train, 10,000
test); a fixed stratified val split is carved from train, and `train_subset` takes a fixed
stratified subset of the rest for CPU-sized studies. `labels_per_class` keeps the labels of a
few images of that pool (tasks.data.labels). Images are resized to `image_size`
and grey is replicated to RGB as the digits are, or kept as one channel (`in_chans=1`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from tasks.config.types import AtLeastOne, Choices, Count, Seed
from tasks.data.base import ImageDataModule
from tasks.data.idx import read_idx
from tasks.data.labels import LabelBudget
from tasks.errors import UserError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION_SUBDIR = Path("FashionMNIST") / "raw"
DOWNLOAD_URL = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ (or github.com/zalandoresearch/fashion-mnist)"
)
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SPLITS = {  # split -> (images file, labels file, count)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}


def _file_in(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def candidate_folders(root: str | Path | None) -> list[Path]:
    """Where the files are looked for, in order: root, root/FashionMNIST/raw, the Debian path."""
    folders = []
    if root:
        root = Path(root).expanduser()
        folders += [root, root / TORCHVISION_SUBDIR]
    return folders + [DEBIAN_DIR]


def locate_files(root: str | Path | None) -> dict[str, Path]:
    """The four IDX files from the first folder that holds all of them."""
    names = [n for images, labels, _ in SPLITS.values() for n in (images, labels)]
    folders = candidate_folders(root)
    for folder in folders:
        found = {n: _file_in(folder, n) for n in names}
        if all(found.values()):
            return found
    looked = "\n".join(f"  {f}" for f in folders)
    raise UserError(
        "Fashion-MNIST not found. Looked for the four IDX files "
        f"({', '.join(n + '[.gz]' for n in names)}) in:\n{looked}\n"
        "Get them in one of three ways:\n"
        "  1. sudo apt-get install dataset-fashion-mnist   (Debian/Ubuntu; installs them in "
        f"{DEBIAN_DIR}; `make fashion` does this)\n"
        f"  2. download the four .gz files from {DOWNLOAD_URL} into a folder\n"
        "  3. point data.root=<folder> at a folder that holds them (or torchvision's <root>/FashionMNIST/raw/)"
    )


def load_split(files: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 images and (N,) int64 labels of one official split, checked."""
    images_name, labels_name, count = SPLITS[split]
    images = read_idx(files[images_name], expected_shape=(count, 28, 28))
    labels = read_idx(files[labels_name], expected_shape=(count,)).astype(np.int64)
    if labels.min() < 0 or labels.max() >= len(CLASSES):
        raise UserError(f"'{files[labels_name]}' holds labels outside 0..9. Replace it with the original download.")
    return images, labels


def to_float_images(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, S, S) in [0, 1], bilinear as the digits are resized."""
    x = torch.from_numpy(np.array(images, dtype=np.float32) / 255.0).unsqueeze(1)
    if image_size != x.shape[-1]:
        x = F.interpolate(x, size=image_size, mode="bilinear", align_corners=False).clamp_(0, 1)
    return x


def stratified_split(
    labels: np.ndarray, val_size: int, train_subset: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: a fixed stratified val split, then an optional stratified subset of
    the rest. The val split does not depend on `train_subset`, so studies share it."""
    idx = np.arange(len(labels))
    if val_size > 0:
        train, val = train_test_split(idx, test_size=val_size, stratify=labels, random_state=seed)
    else:
        train, val = idx, np.array([], dtype=np.int64)
    if train_subset is not None and train_subset < len(train):
        train, _ = train_test_split(train, train_size=train_subset, stratify=labels[train], random_state=seed)
    return np.sort(train), np.sort(val)


class GreyImages(Dataset):
    """(N, 1, S, S) float images shown with `channels` channels (grey replicated), and labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, channels: int):
        self.images, self.labels, self.channels = images, labels, channels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i].expand(self.channels, -1, -1), self.labels[i]


class FashionMNISTDataModule(ImageDataModule):
    num_classes = 10
    class_names = CLASSES  # exports carry them as label_names, so predictions name the class
    # Statistics of the 60,000 official training images resized to 32x32 (0.2860 / 0.3530 at 28x28).
    mean = (0.2854,)
    std = (0.3384,)

    def __init__(
        self,
        root: str | None = None,
        image_size: AtLeastOne = 32,
        in_chans: int = 3,
        val_size: Count = 5000,
        train_subset: int | None = None,
        split_seed: Seed = 0,
        labels_per_class: Count | None = None,
        label_seed: Seed = 0,
        unlabelled: Annotated[str, Choices("tasks.data.labels.UNLABELLED_MODES")] = "drop",
        **kwargs,
    ):
        """`labels_per_class`: only this many labelled images per class of the training pool,
        a stratified draw by `label_seed`; the rest of the pool is dropped or kept with label -1
        (`unlabelled: drop|mask`). Val and test keep their labels."""
        if in_chans not in (1, 3):
            raise UserError(f"data.in_chans must be 1 (grey) or 3 (grey replicated to RGB), got {in_chans}.")
        count = SPLITS["train"][2]
        if not 0 <= val_size < count:
            raise UserError(f"data.val_size must be in [0, {count}), got {val_size}.")
        if train_subset is not None and not 10 <= train_subset <= count - val_size:
            raise UserError(
                f"data.train_subset must be in [10, {count - val_size}] (at least one image per class, "
                f"at most what the val split leaves), got {train_subset}."
            )
        self.files = locate_files(root)  # fails at instantiation, before training, when the data is missing
        kwargs.setdefault("mean", self.mean * in_chans)
        kwargs.setdefault("std", self.std * in_chans)
        super().__init__(**kwargs)
        self.root, self.image_size, self.in_chans = root, image_size, in_chans
        self.val_size, self.train_subset, self.split_seed = val_size, train_subset, split_seed
        self.label_budget = LabelBudget(labels_per_class, label_seed, unlabelled)
        self.labels_used: dict | None = None  # set by setup: the summary records it

    @property
    def source(self) -> Path:
        return next(iter(self.files.values())).parent

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_images, train_labels = load_split(self.files, "train")
        test_images, test_labels = load_split(self.files, "test")
        train_idx, val_idx = stratified_split(train_labels, self.val_size, self.train_subset, self.split_seed)
        y_train = torch.from_numpy(train_labels)

        def subset(idx: np.ndarray) -> GreyImages:
            # only the images a split uses are resized (a 2,000-image study need not resize 60,000)
            return GreyImages(to_float_images(train_images[idx], self.image_size), y_train[idx], self.in_chans)

        pool = subset(train_idx)
        kept, pool_labels, self.labels_used = self.label_budget.apply(torch.arange(len(train_idx)), pool.labels)
        self.train_set = GreyImages(pool.images[kept], pool_labels, self.in_chans)
        # With val_size=0 the official test set also serves for validation (as the original recipes do).
        self.val_set = subset(val_idx) if len(val_idx) else None
        self.test_set = GreyImages(
            to_float_images(test_images, self.image_size), torch.from_numpy(test_labels), self.in_chans
        )
        if self.val_set is None:
            self.val_set = self.test_set
