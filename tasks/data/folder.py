"""Image folders on disk: Tiny-ImageNet in its standard layout and generic ImageFolder
trees (train/val[/test]/<class>/<image>). Images are decoded and cropped per sample in
the loader workers; normalisation happens on the device like every DataModule."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from tasks.config.types import AtLeastOne, Seed
from tasks.data.base import ImageDataModule
from tasks.data.layout import require_layout
from tasks.io.files import read_image

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _transforms(size: int, train: bool) -> v2.Compose:
    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if train:
        return v2.Compose(
            [v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip(), *to_tensor]
        )
    return v2.Compose([v2.Resize(int(round(size * 1.143)), antialias=True), v2.CenterCrop(size), *to_tensor])


class ImageList(Dataset):
    def __init__(self, items: list[tuple[Path, int]], transform):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        return self.transform(read_image(path, "Image")), label  # a broken image is named, not a traceback


def scan_class_folders(root: Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """(image, class index) pairs of root/<class>/**/<image>, classes sorted by name."""
    classes = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    items = [
        (f, i) for i, c in enumerate(classes) for f in sorted((root / c).rglob("*")) if f.suffix.lower() in _EXTENSIONS
    ]
    return items, classes


def holdout(items: list, per_class: int, seed: int) -> tuple[list, list]:
    """Split off `per_class` items of every class, chosen with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    order = [items[i] for i in torch.randperm(len(items), generator=g).tolist()]
    taken: dict[int, int] = {}
    keep, held = [], []
    for item in order:
        if taken.get(item[1], 0) < per_class:
            taken[item[1]] = taken.get(item[1], 0) + 1
            held.append(item)
        else:
            keep.append(item)
    return sorted(keep), sorted(held)


class ImageFolderDataModule(ImageDataModule):
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    LAYOUT = (
        "  {root}/\n    train/<class>/<image>\n    val/<class>/<image>\n"
        "    test/<class>/<image>   (optional; val is the test set without it)\n"
    )

    def __init__(self, root: str, image_size: AtLeastOne = 224, val_per_class: int = 0, split_seed: Seed = 0, **kwargs):
        require_layout(
            root,
            ["train"],
            "ImageFolder",
            self.LAYOUT.format(root=root),
            "any folder tree of images, one sub-folder per class",
        )
        super().__init__(**kwargs)
        self.root, self.image_size, self.val_per_class, self.split_seed = (
            Path(root),
            image_size,
            val_per_class,
            split_seed,
        )
        self.classes = sorted(p.name for p in (self.root / "train").iterdir() if p.is_dir())
        self.num_classes = len(self.classes)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, _ = scan_class_folders(self.root / "train", self.classes)
        val = scan_class_folders(self.root / "val", self.classes)[0] if (self.root / "val").is_dir() else []
        if not val or self.val_per_class > 0:
            train, val = holdout(train, self.val_per_class or 5, self.split_seed)
        test = scan_class_folders(self.root / "test", self.classes)[0] if (self.root / "test").is_dir() else val
        self._build(train, val, test)

    def _build(self, train, val, test) -> None:
        self.train_set = ImageList(train, _transforms(self.image_size, True))
        self.val_set = ImageList(val, _transforms(self.image_size, False))
        self.test_set = ImageList(test, _transforms(self.image_size, False))


class TinyImageNetDataModule(ImageFolderDataModule):
    """Tiny-ImageNet-200: validation held out of train (`val_per_class`), the official val as test."""

    mean, std = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)
    LAYOUT = (
        "  {root}/   (tiny-imagenet-200)\n    wnids.txt\n    train/<wnid>/images/<wnid>_<k>.JPEG\n"
        "    val/images/val_<k>.JPEG\n    val/val_annotations.txt\n"
    )

    def __init__(self, root: str, image_size: AtLeastOne = 64, val_per_class: int = 10, split_seed: Seed = 0, **kwargs):
        require_layout(
            root,
            ["wnids.txt", "train", "val/images", "val/val_annotations.txt"],
            "Tiny-ImageNet",
            self.LAYOUT.format(root=root),
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip (unzip it)",
        )
        ImageDataModule.__init__(self, **kwargs)
        self.root, self.image_size, self.val_per_class, self.split_seed = (
            Path(root),
            image_size,
            val_per_class,
            split_seed,
        )
        self.classes = (self.root / "wnids.txt").read_text().split()
        self.num_classes = len(self.classes)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, _ = scan_class_folders(self.root / "train", self.classes)
        index = {c: i for i, c in enumerate(self.classes)}
        test = []
        for line in (self.root / "val" / "val_annotations.txt").read_text().splitlines():
            name, wnid, *_ = line.split("\t")
            test.append((self.root / "val" / "images" / name, index[wnid]))
        train, val = holdout(train, self.val_per_class, self.split_seed)
        self._build(train, val, test)
