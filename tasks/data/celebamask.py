"""CelebAMask-HQ face parsing (Lee et al., CVPR 2020): 30,000 CelebA-HQ faces with 18
hand-drawn part masks at 512x512, merged into one label map of 19 classes.

Label map (the dataset authors' own merge, `face_parsing/Data_preprocessing/g_mask.py` of
github.com/switchablenorms/CelebAMask-HQ: parts in this order, a later part overwrites an
earlier one): 0 background, 1 skin, 2 nose, 3 eye_g (glasses), 4 l_eye, 5 r_eye, 6 l_brow,
7 r_brow, 8 l_ear, 9 r_ear, 10 mouth, 11 u_lip, 12 l_lip, 13 hair, 14 hat, 15 ear_r
(earring), 16 neck_l (necklace), 17 neck, 18 cloth.

Split (the usual one, from CelebA's own partition): an image whose original CelebA index
(`orig_idx` in CelebA-HQ-to-CelebA-mapping.txt) is < 162771 is train, < 182638 val, else
test (24,183 / 2,993 / 2,824 images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tasks.data.folder import IMAGENET_MEAN, IMAGENET_STD
from tasks.data.layout import require_layout
from tasks.dense.data import SegmentationDataModule
from tasks.errors import UserError

PARTS = ("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth",
         "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
CLASS_NAMES = ("background", *PARTS)
SPLIT_BOUNDS = (162771, 182638)  # CelebA original index: train below the first, val below the second
IMAGES, MASKS, MAPPING = "CelebA-HQ-img", "CelebAMask-HQ-mask-anno", "CelebA-HQ-to-CelebA-mapping.txt"
LAYOUT = """  {root}/
    CelebA-HQ-img/<i>.jpg                               i = 0..29999 (1024x1024)
    CelebAMask-HQ-mask-anno/<i // 2000>/<i:05d>_<part>.png  part in skin, nose, ..., cloth (512x512)
    CelebA-HQ-to-CelebA-mapping.txt                     columns: idx orig_idx orig_file
"""
SOURCE = "https://github.com/switchablenorms/CelebAMask-HQ (CelebAMask-HQ.zip; unzip it into data.root)"


def merge_parts(root: Path, index: int, size: int = 512) -> np.ndarray:
    """The (size, size) uint8 label map of image `index`: part masks in PARTS order, any
    non-zero pixel of part p sets the label to p's class (later parts win)."""
    labels = np.zeros((size, size), dtype=np.uint8)
    folder = root / MASKS / str(index // 2000)
    for cls, part in enumerate(PARTS, start=1):
        path = folder / f"{index:05d}_{part}.png"
        if path.is_file():
            with Image.open(path) as img:
                mask = img.convert("L")
                if mask.size != (size, size):
                    mask = mask.resize((size, size), Image.NEAREST)
                labels[np.asarray(mask) > 0] = cls
    return labels


def read_split(root: Path) -> dict[str, list[int]]:
    """CelebA-HQ indices of train/val/test from the mapping file."""
    split: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for line in (root / MAPPING).read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2:
            idx, orig = int(fields[0]), int(fields[1])
            split["train" if orig < SPLIT_BOUNDS[0] else "val" if orig < SPLIT_BOUNDS[1] else "test"].append(idx)
    return split


class CelebAMaskSet(Dataset):
    """([0, 1] image (3, S, S), int64 label map (S, S)); the image is resized to the masks' size S."""

    def __init__(self, root: Path, indices: list[int], size: int):
        self.root, self.indices, self.size = root, indices, size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        with Image.open(self.root / IMAGES / f"{index}.jpg") as img:
            image = img.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()
        labels = torch.from_numpy(merge_parts(self.root, index, self.size).astype(np.int64))
        return x, labels


class CelebAMaskDataModule(SegmentationDataModule):
    class_names = CLASS_NAMES
    flip_pairs = ((4, 5), (6, 7), (8, 9))  # l/r eye, brow, ear
    pad_label = 255                          # pixels from outside the image are unknown, not background
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, root: str, image_size: int = 512, crop_size: int | None = 448, **kwargs):
        self.root = require_layout(root, [IMAGES, MASKS, MAPPING], "CelebAMask-HQ", LAYOUT.format(root=root), SOURCE)
        super().__init__(**kwargs)
        self.image_size, self.crop_size = image_size, crop_size

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        split = read_split(self.root)
        empty = [name for name, ids in split.items() if not ids]
        if empty:
            raise UserError(f"{self.root / MAPPING} lists no {'/'.join(empty)} image (split by orig_idx at {SPLIT_BOUNDS}).")
        # One image per split must exist: catches a mapping file without its images.
        require_layout(self.root, [f"{IMAGES}/{ids[0]}.jpg" for ids in split.values()], "CelebAMask-HQ",
                       LAYOUT.format(root=self.root), SOURCE)
        self.train_set, self.val_set, self.test_set = (CelebAMaskSet(self.root, split[s], self.image_size) for s in ("train", "val", "test"))
