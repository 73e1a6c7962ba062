"""CelebAMask-HQ face parsing (Lee et al., CVPR 2020): 30,000 CelebA-HQ faces with 18
hand-drawn part masks at 512x512, merged into one label map.

Classes (`class_order`, `with_background`):
- "mmseg" (the order of RepFusion's mmseg recipe: its CelebAHQMask dataset and
  tools/dataset/process_celebahqmask.py): parts
  merged in the order skin, l_brow, r_brow, l_eye, r_eye, eye_g, l_ear, r_ear, ear_r, nose,
  mouth, u_lip, l_lip, neck, neck_l, cloth, hair, hat (a later part overwrites an earlier
  one), 18 classes 0..17 in that order, background ignored (255), as `num_classes=18` does.
- "authors" (the dataset authors' face_parsing/Data_preprocessing/g_mask.py): order skin,
  nose, eye_g, l_eye, r_eye, l_brow, r_brow, l_ear, r_ear, mouth, u_lip, l_lip, hair, hat,
  ear_r, neck_l, neck, cloth.
With `with_background=true` background is class 0 and the parts are 1..18.

Split (`split`): "celeba" (CelebA's own partition: `orig_idx` in
CelebA-HQ-to-CelebA-mapping.txt < 162771 train, < 182638 val, else test; 24,183 / 2,993 /
2,824 images) or "mmseg" (the recipe's files {train,val,test}_celebahqmask.txt in
data.root: one image number per line; its script drew them by an unseeded shuffle with the
same sizes, so only a user who has the files can reproduce that split).

Masks (`masks`): "parts" (the published per-part PNGs, merged on the fly) or "merged"
(RepFusion's mask/<i>.png: 0 background, l = 1..18 the l-th part of the "mmseg" order)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tasks.config.types import AtLeastOne, Count, Probability
from tasks.data.augment import RandomAffine
from tasks.data.folder import IMAGENET_MEAN, IMAGENET_STD
from tasks.data.layout import require_layout
from tasks.dense.data.base import SegmentationDataModule
from tasks.dense.photometric import PhotoMetricDistortion
from tasks.dense.seg_pipeline import ResizeCropFlip
from tasks.errors import UserError
from tasks.io.files import read_image

PART_ORDERS = {
    "mmseg": (
        "skin",
        "l_brow",
        "r_brow",
        "l_eye",
        "r_eye",
        "eye_g",
        "l_ear",
        "r_ear",
        "ear_r",
        "nose",
        "mouth",
        "u_lip",
        "l_lip",
        "neck",
        "neck_l",
        "cloth",
        "hair",
        "hat",
    ),
    "authors": (
        "skin",
        "nose",
        "eye_g",
        "l_eye",
        "r_eye",
        "l_brow",
        "r_brow",
        "l_ear",
        "r_ear",
        "mouth",
        "u_lip",
        "l_lip",
        "hair",
        "hat",
        "ear_r",
        "neck_l",
        "neck",
        "cloth",
    ),
}
PARTS = PART_ORDERS["authors"]
MIRROR_PARTS = (("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear"))
SPLITS = ("train", "val", "test")
SPLIT_BOUNDS = (162771, 182638)  # CelebA original index: train below the first, val below the second
IMAGES, MASKS, MAPPING, MERGED = "CelebA-HQ-img", "CelebAMask-HQ-mask-anno", "CelebA-HQ-to-CelebA-mapping.txt", "mask"
SPLIT_LISTS = "{}_celebahqmask.txt"
CLASS_ORDERS, SPLIT_CHOICES = tuple(PART_ORDERS), ("celeba", "mmseg")
MASK_CHOICES, AUGMENTS = ("parts", "merged"), ("mmseg", "affine")
LAYOUT = """  {root}/
    CelebA-HQ-img/<i>.jpg                                 i = 0..29999 (1024x1024)
    CelebAMask-HQ-mask-anno/<i // 2000>/<i:05d>_<part>.png  part in skin, nose, ..., cloth (512x512) [masks=parts]
    CelebA-HQ-to-CelebA-mapping.txt                       columns: idx orig_idx orig_file              [split=celeba]
    mask/<i>.png                                          RepFusion's merged labels (0 background, 1..18) [masks=merged]
    {{train,val,test}}_celebahqmask.txt                     RepFusion's split, one image number a line [split=mmseg]
"""
SOURCE = "https://github.com/switchablenorms/CelebAMask-HQ (CelebAMask-HQ.zip; unzip it into data.root)"


def class_names(order: str = "mmseg", with_background: bool = False) -> tuple[str, ...]:
    return (("background",) if with_background else ()) + PART_ORDERS[order]


def label_table(with_background: bool, ignore_index: int = 255) -> np.ndarray:
    """Merged label (0 background, l = 1..18) -> training label."""
    table = np.arange(256, dtype=np.int64)
    if not with_background:
        table = table - 1
        table[0] = ignore_index
        table[19:] = ignore_index
    return table


def merge_parts(root: Path, index: int, size: int = 512, order: str = "authors") -> np.ndarray:
    """The (size, size) uint8 merged map of image `index`: 0 background; a non-zero pixel of
    the l-th part of `order` sets l (1..18), later parts winning."""
    labels = np.zeros((size, size), dtype=np.uint8)
    folder = root / MASKS / str(index // 2000)
    for cls, part in enumerate(PART_ORDERS[order], start=1):
        path = folder / f"{index:05d}_{part}.png"
        if path.is_file():
            mask = read_image(path, "CelebAMask-HQ part mask", mode="L")
            if mask.size != (size, size):
                mask = mask.resize((size, size), Image.NEAREST)
            labels[np.asarray(mask) > 0] = cls
    return labels


def read_merged(root: Path, index: int, size: int = 512) -> np.ndarray:
    """RepFusion's merged map mask/<index>.png (values 0..18)."""
    mask = read_image(root / MERGED / f"{index}.png", "CelebAMask-HQ merged mask", mode="L")
    if mask.size != (size, size):
        mask = mask.resize((size, size), Image.NEAREST)
    return np.asarray(mask, dtype=np.uint8).copy()


def read_split(root: Path) -> dict[str, list[int]]:
    """CelebA-HQ indices of train/val/test from the mapping file (CelebA's partition)."""
    split: dict[str, list[int]] = {s: [] for s in SPLITS}
    for line in (root / MAPPING).read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2:
            idx, orig = int(fields[0]), int(fields[1])
            split["train" if orig < SPLIT_BOUNDS[0] else "val" if orig < SPLIT_BOUNDS[1] else "test"].append(idx)
    return split


def read_split_lists(root: Path) -> dict[str, list[int]]:
    """RepFusion's split files: one image number (file stem) per line."""
    split = {}
    for name in SPLITS:
        path = root / SPLIT_LISTS.format(name)
        try:
            split[name] = [int(line.strip()) for line in path.read_text().splitlines() if line.strip()]
        except ValueError as err:
            raise UserError(f"{path}: every line must be an image number such as 12345 ({err}).") from None
    return split


class CelebAMaskSet(Dataset):
    """([0, 1] image (3, S, S), int64 label map (S, S)); the image is resized to the masks' size S."""

    def __init__(
        self,
        root: Path,
        indices: list[int],
        size: int,
        order: str = "authors",
        with_background: bool = True,
        masks: str = "parts",
    ):
        self.root, self.indices, self.size, self.order, self.masks = root, indices, size, order, masks
        self.table = label_table(with_background)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        image = read_image(self.root / IMAGES / f"{index}.jpg", "CelebAMask-HQ image")
        image = image.resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()
        if self.masks == "merged":
            merged = read_merged(self.root, index, self.size)
        else:
            merged = merge_parts(self.root, index, self.size, self.order)
        return x, torch.from_numpy(self.table[merged])


class CelebAMaskDataModule(SegmentationDataModule):
    pad_label = 255  # pixels from outside the image are unknown, not background
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(
        self,
        root: str,
        image_size: AtLeastOne = 512,
        crop_size: Count | None = 448,
        class_order: str = "mmseg",
        with_background: bool = False,
        flip_swap_lr: bool = False,
        split: str = "celeba",
        masks: str = "parts",
        augment: str = "mmseg",
        ratio_range: Sequence[float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        flip_prob: Probability = 0.5,
        photometric: bool = True,
        **kwargs,
    ):
        for key, value, allowed in (
            ("class_order", class_order, CLASS_ORDERS),
            ("split", split, SPLIT_CHOICES),
            ("masks", masks, MASK_CHOICES),
            ("augment", augment, AUGMENTS),
        ):
            if value not in allowed:
                raise UserError(f"data.{key}='{value}' is not one of {list(allowed)}.")
        if masks == "merged" and class_order != "mmseg":
            raise UserError(
                "data.masks=merged reads RepFusion's mask/<i>.png, whose labels follow the 'mmseg' "
                "part order; set data.class_order=mmseg (or data.masks=parts)."
            )
        required = [IMAGES, MASKS if masks == "parts" else MERGED]
        required += [MAPPING] if split == "celeba" else [SPLIT_LISTS.format(s) for s in SPLITS]
        self.root = require_layout(root, required, "CelebAMask-HQ", LAYOUT.format(root=root), SOURCE)
        super().__init__(**kwargs)
        self.image_size, self.crop_size = image_size, crop_size
        self.class_order, self.with_background, self.split, self.masks = class_order, with_background, split, masks
        self.class_names = class_names(class_order, with_background)
        mirrored = tuple((self.class_names.index(a), self.class_names.index(b)) for a, b in MIRROR_PARTS)
        self.flip_pairs = mirrored if flip_swap_lr else ()
        if self.batch_augment is None:
            self.batch_augment = self._augmentation(augment, tuple(ratio_range), cat_max_ratio, flip_prob, photometric)

    def _augmentation(
        self, augment: str, ratio_range: tuple, cat_max_ratio: float, flip_prob: float, photometric: bool
    ):
        if augment == "affine":  # one warp of the 512 image (the translation plays the crop), then the centre crop
            return RandomAffine(scale=ratio_range, translate_px=64, hflip=flip_prob > 0)
        if not self.crop_size:
            raise UserError("data.augment=mmseg needs data.crop_size (mmseg's RandomCrop size, 448 in the recipe).")
        return ResizeCropFlip(
            crop_size=self.crop_size,
            ratio_range=ratio_range,
            cat_max_ratio=cat_max_ratio,
            flip_prob=flip_prob,
            photometric=PhotoMetricDistortion() if photometric else None,
            ignore_index=self.ignore_index,
            pad_value=tuple(self.mean),
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        split = read_split(self.root) if self.split == "celeba" else read_split_lists(self.root)
        empty = [name for name, ids in split.items() if not ids]
        if empty:
            raise UserError(f"The {self.split} split under {self.root} lists no {'/'.join(empty)} image.")
        # One image per split must exist: catches a split file without its images.
        require_layout(
            self.root,
            [f"{IMAGES}/{ids[0]}.jpg" for ids in split.values()],
            "CelebAMask-HQ",
            LAYOUT.format(root=self.root),
            SOURCE,
        )
        self.train_set, self.val_set, self.test_set = (
            CelebAMaskSet(self.root, split[s], self.image_size, self.class_order, self.with_background, self.masks)
            for s in SPLITS
        )
