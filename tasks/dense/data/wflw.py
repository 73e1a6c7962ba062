"""WFLW facial landmarks (Wu et al., CVPR 2018): 10,000 faces (7,500 train, 2,500 test) with
98 points, a face box and 6 attributes each; six test subsets (large pose, expression,
illumination, make-up, occlusion, blur). Reads the raw layout and mmpose's JSON layout
(tasks.dense.data.wflw_layouts). The NME normaliser is the distance between the outer eye
corners, points 60 and 72.

Faces are cropped top-down to a square of `image_size` pixels:
- crop_box="landmarks" (mmpose, the RepFusion recipe): centred on the tight box around the
  98 points, side margin * ceil(max(w, h)) (mmpose's JSON scale * 200 * padding 1.25), with
  the centre at pixel S / 2 as mmpose's get_affine_transform puts it;
- crop_box="rect": centred on the annotated face rectangle, side margin * its longer side,
  centre at pixel (S - 1) / 2 (raw layout only).

Training augmentation (`augment`): "mmpose" (flip 0.5, rotation N(0, 30) clipped to +-60
degrees with probability 0.6, scale 1 + N(0, 0.25) clipped to 0.75-1.25, sampled from a
twice-wider context crop: tasks.dense.topdown_augment) or "uniform" (rotation U(+-30) and
scale U(0.75, 1.25) on every sample, flip, warping the face crop itself)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import Dataset

from tasks.config.types import AtLeastOne, Count, Probability, Seed
from tasks.data.augment import RandomAffine
from tasks.data.folder import IMAGENET_MEAN, IMAGENET_STD
from tasks.data.layout import require_layout
from tasks.dense.data.base import KeypointDataModule
from tasks.dense.data.wflw_layouts import MMPOSE_ANNOTATIONS, NUM_POINTS, RAW_LISTS, SUBSETS, read_mmpose, read_raw
from tasks.dense.geometry import square_crop_theta, transform_keypoints
from tasks.dense.topdown_augment import TopDownScaleRotation
from tasks.errors import UserError
from tasks.io.files import read_image

log = logging.getLogger(__name__)
LISTS = RAW_LISTS
LAYOUT = """  {root}/   one of
    raw (data.layout=raw):
      WFLW_images/<event folder>/<file>.jpg          e.g. 0--Parade/0_Parade_marchingband_1_116.jpg
      WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{{train,test}}.txt
        one face per line: 196 coordinates, 4 box values, 6 attributes, image path
      WFLW_annotations/list_98pt_test/list_98pt_test_<subset>.txt   (optional: the test subsets)
    mmpose (data.layout=mmpose):
      images/<event folder>/<file>.jpg
      annotations/face_landmarks_wflw_{{train,test}}.json      (+ face_landmarks_wflw_test_<subset>.json)
"""
SOURCE = (
    "https://wywu.github.io/projects/LAB/WFLW.html (WFLW_images.tar.gz and WFLW_annotations.tar.gz; "
    "extract both into data.root)"
)
LAYOUTS = {
    "raw": ("WFLW_images", [f"{LISTS}/list_98pt_rect_attr_train.txt", f"{LISTS}/list_98pt_rect_attr_test.txt"]),
    "mmpose": (
        "images",
        [f"{MMPOSE_ANNOTATIONS}/face_landmarks_wflw_train.json", f"{MMPOSE_ANNOTATIONS}/face_landmarks_wflw_test.json"],
    ),
}
CROP_BOXES, LAYOUT_CHOICES, AUGMENTS = ("landmarks", "rect"), ("auto", *LAYOUTS), ("mmpose", "uniform")
CAVEAT = (
    "WFLW: data.val_size=0 validates on the 2,500 test faces, as RepFusion's mmpose recipe did (save_best='NME' "
    "on the test set): the checkpoint is chosen on the test set, so its test NME is optimistic. "
    "data.val_size=500 holds out 500 training faces for validation instead."
)
# Mirror correspondence of the 98 points (as in mmpose's WFLW dataset info).
_PAIRS = (
    [(i, 32 - i) for i in range(16)]
    + [(33 + i, 46 - i) for i in range(5)]
    + [(38 + i, 50 - i) for i in range(4)]
    + [(55, 59), (56, 58)]
    + [(60 + i, 72 - i) for i in range(5)]
    + [(65, 75), (66, 74), (67, 73)]
    + [(76, 82), (77, 81), (78, 80), (87, 83), (86, 84), (88, 92), (89, 91), (95, 93), (96, 97)]
)


def _flip_index() -> tuple[int, ...]:
    index = list(range(NUM_POINTS))
    for a, b in _PAIRS:
        index[a], index[b] = b, a
    return tuple(index)


FLIP_INDEX = _flip_index()


def crop_square(record: dict, crop_box: str, margin: float) -> tuple[tuple[float, float], float]:
    """(centre (x, y), side) of a face's crop before the frame convention."""
    if crop_box == "rect":
        x0, y0, x1, y1 = record["box"]
        return ((x0 + x1) / 2, (y0 + y1) / 2), max(x1 - x0, y1 - y0) * margin
    if "scale" in record:  # mmpose's JSON: centre and ceil(max(w, h)) / 200 as written by its converter
        return tuple(record["center"]), record["scale"] * 200 * margin
    low, high = record["points"].min(0), record["points"].max(0)
    return tuple((low + high) / 2), math.ceil(max(high - low)) * margin


class WFLWFaces(Dataset):
    """([0, 1] face crop (3, C, C), keypoints (98, 2) in crop pixels, visibility (98,), subset tag).
    C = image_size * context: a context crop (same pixel density, `context` times wider) for
    the device-side mmpose augmentation, or the face crop itself (context 1)."""

    def __init__(
        self,
        images: Path,
        records: list[dict],
        size: int,
        margin: float,
        crop_box: str = "landmarks",
        context: float = 1.0,
    ):
        self.images, self.records, self.size, self.margin = images, records, size, margin
        self.crop_box, self.context = crop_box, context

    def __len__(self) -> int:
        return len(self.records)

    def theta(self, record: dict, in_size: tuple[int, int]) -> tuple[torch.Tensor, int]:
        centre, side = crop_square(record, self.crop_box, self.margin)
        out = round(self.size * self.context)
        if self.crop_box == "landmarks":  # mmpose's frame: the centre lands on pixel S / 2, not (S - 1) / 2
            centre = (centre[0] - 0.5 * side / self.size, centre[1] - 0.5 * side / self.size)
        return square_crop_theta(centre, side * self.context, in_size), out

    def __getitem__(self, i: int):
        record = self.records[i]
        img = read_image(self.images / record["image"], "WFLW image")
        image = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
        h, w = image.shape[-2:]
        theta, out = self.theta(record, (h, w))
        grid = F.affine_grid(theta, [1, 3, out, out], align_corners=False)
        crop = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        points = transform_keypoints(torch.from_numpy(record["points"]).float()[None], theta, (h, w), (out, out))[0]
        visible = torch.from_numpy(np.asarray(record["visible"], dtype=np.float32))
        return crop, points, visible, torch.tensor(record.get("tag", 0), dtype=torch.long)


class WFLWDataModule(KeypointDataModule):
    flip_index = FLIP_INDEX
    interocular = (60, 72)  # outer eye corners
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(
        self,
        root: str,
        image_size: AtLeastOne = 256,
        margin: float = 1.25,
        crop_box: str = "landmarks",
        layout: str = "auto",
        val_size: Count = 0,
        split_seed: Seed = 0,
        augment: str = "mmpose",
        rot_factor: float = 30.0,
        rot_prob: Probability = 0.6,
        scale_factor: float = 0.25,
        flip_prob: Probability = 0.5,
        **kwargs,
    ):
        for key, value, allowed in (
            ("crop_box", crop_box, CROP_BOXES),
            ("layout", layout, LAYOUT_CHOICES),
            ("augment", augment, AUGMENTS),
        ):
            if value not in allowed:
                raise UserError(f"data.{key}='{value}' is not one of {list(allowed)}.")
        self.layout = self._find_layout(Path(root).expanduser()) if layout == "auto" else layout
        if self.layout == "mmpose" and crop_box == "rect":
            raise UserError(
                "data.crop_box=rect needs the raw layout's face rectangles; mmpose's JSON has none. "
                "Use data.crop_box=landmarks (mmpose's own box) or the raw annotations."
            )
        folder, lists = LAYOUTS[self.layout]
        self.root = require_layout(root, [folder, *lists], "WFLW", LAYOUT.format(root=root), SOURCE)
        super().__init__(**kwargs)
        self.image_size, self.margin, self.crop_box = image_size, margin, crop_box
        self.val_size, self.split_seed = val_size, split_seed
        self.images = self.root / folder
        self.subset_names: tuple[str, ...] = ()
        self.train_context = 1.0
        if self.batch_augment is None:
            if augment == "mmpose":
                self.batch_augment = TopDownScaleRotation(rot_factor, rot_prob, scale_factor, flip_prob)
                self.train_context = self.batch_augment.context
            else:  # every sample rotated U(+-rot_factor) and scaled U(1 +- scale_factor), warping the face crop
                scale = (1 - scale_factor, 1 + scale_factor)
                self.batch_augment = RandomAffine(degrees=rot_factor, scale=scale, hflip=flip_prob > 0)

    @staticmethod
    def _find_layout(root: Path) -> str:
        for name, (_folder, lists) in LAYOUTS.items():
            if (root / lists[0]).is_file():
                return name
        return "raw"  # require_layout then names what is missing

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, test, subset_source = (read_raw if self.layout == "raw" else read_mmpose)(self.root)
        missing = [r["image"] for r in train[:1] + test[:1] if not (self.images / r["image"]).is_file()]
        if missing:
            require_layout(
                self.root, [f"{self.images.name}/{missing[0]}"], "WFLW", LAYOUT.format(root=self.root), SOURCE
            )
        if self.val_size >= len(train):
            raise UserError(f"data.val_size={self.val_size} leaves no training face (the train list has {len(train)}).")
        if self.val_size > 0:  # held out of train with a fixed seed
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
            val = [train[i] for i in sorted(order[: self.val_size])]
            train = [train[i] for i in sorted(order[self.val_size :])]
        else:  # the original recipe validates on the test set
            val = test
            rank_zero_only(log.warning)(CAVEAT)
        self.subset_names = SUBSETS if any(r.get("tag", 0) for r in test) else ()
        counts = ", ".join(f"{n} {sum(r['tag'] >> b & 1 for r in test)}" for b, n in enumerate(SUBSETS))
        rank_zero_only(log.info)(f"WFLW test subsets from {subset_source}: {counts}")
        self.train_set = WFLWFaces(self.images, train, self.image_size, self.margin, self.crop_box, self.train_context)
        self.val_set, self.test_set = (
            WFLWFaces(self.images, r, self.image_size, self.margin, self.crop_box) for r in (val, test)
        )
