"""WFLW facial landmarks (Wu et al., CVPR 2018): 10,000 faces (7,500 train, 2,500 test) with
98 points, a face box and 6 attributes each. Faces are cropped top-down: a square around
the box centre, `margin` times the box's longer side, resized to `image_size`.

Annotation line (list_98pt_rect_attr_{train,test}.txt): 196 coordinates (x0 y0 ... x97 y97),
the box (x_min y_min x_max y_max), 6 attributes (pose, expression, illumination, make-up,
occlusion, blur), and the image path under WFLW_images/. The NME normaliser is the
inter-ocular distance between the outer eye corners, points 60 and 72."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from tasks.data.folder import IMAGENET_MEAN, IMAGENET_STD
from tasks.data.layout import require_layout
from tasks.dense.data import KeypointDataModule
from tasks.dense.geometry import square_crop_theta, transform_keypoints
from tasks.errors import UserError

NUM_POINTS = 98
LISTS = "WFLW_annotations/list_98pt_rect_attr_train_test"
LAYOUT = """  {root}/
    WFLW_images/<event folder>/<file>.jpg          e.g. 0--Parade/0_Parade_marchingband_1_116.jpg
    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt
    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt
      one face per line: 196 coordinates, 4 box values, 6 attributes, image path
"""
SOURCE = "https://wywu.github.io/projects/LAB/WFLW.html (WFLW_images.tar.gz and WFLW_annotations.tar.gz; extract both into data.root)"
# Mirror correspondence of the 98 points (as in mmpose's WFLW dataset info).
_PAIRS = [(i, 32 - i) for i in range(16)] + [(33 + i, 46 - i) for i in range(5)] + [(38 + i, 50 - i) for i in range(4)] \
    + [(55, 59), (56, 58)] + [(60 + i, 72 - i) for i in range(5)] + [(65, 75), (66, 74), (67, 73)] \
    + [(76, 82), (77, 81), (78, 80), (87, 83), (86, 84), (88, 92), (89, 91), (95, 93), (96, 97)]


def _flip_index() -> tuple[int, ...]:
    index = list(range(NUM_POINTS))
    for a, b in _PAIRS:
        index[a], index[b] = b, a
    return tuple(index)


FLIP_INDEX = _flip_index()


def parse_annotations(path: Path) -> list[dict]:
    """One record per line: points (98, 2), box (4,), attributes (6,), image (relative path)."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 * NUM_POINTS + 4 + 6 + 1:
            raise UserError(f"{path}:{number}: expected 207 fields (196 coordinates, 4 box, 6 attributes, image path), got {len(fields)}.")
        values = np.array(fields[:-1], dtype=np.float64)
        records.append({"points": values[:196].reshape(NUM_POINTS, 2), "box": values[196:200],
                        "attributes": values[200:206].astype(int), "image": fields[-1]})
    return records


class WFLWFaces(Dataset):
    """([0, 1] face crop (3, S, S), keypoints (98, 2) in crop pixels, visibility (98,))."""

    def __init__(self, root: Path, records: list[dict], size: int, margin: float):
        self.root, self.records, self.size, self.margin = root, records, size, margin

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        record = self.records[i]
        with Image.open(self.root / "WFLW_images" / record["image"]) as img:
            image = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        x0, y0, x1, y1 = record["box"]
        centre, side = ((x0 + x1) / 2, (y0 + y1) / 2), max(x1 - x0, y1 - y0) * self.margin
        h, w = image.shape[-2:]
        theta = square_crop_theta(centre, side, (h, w))
        grid = F.affine_grid(theta, [1, 3, self.size, self.size], align_corners=False)
        crop = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        points = transform_keypoints(torch.from_numpy(record["points"]).float()[None], theta, (h, w), (self.size, self.size))[0]
        return crop, points, torch.ones(NUM_POINTS)


class WFLWDataModule(KeypointDataModule):
    flip_index = FLIP_INDEX
    interocular = (60, 72)  # outer eye corners
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, root: str, image_size: int = 256, margin: float = 1.25, val_size: int = 500,
                 split_seed: int = 0, **kwargs):
        self.root = require_layout(root, ["WFLW_images", f"{LISTS}/list_98pt_rect_attr_train.txt",
                                          f"{LISTS}/list_98pt_rect_attr_test.txt"], "WFLW", LAYOUT.format(root=root), SOURCE)
        super().__init__(**kwargs)
        self.image_size, self.margin, self.val_size, self.split_seed = image_size, margin, val_size, split_seed

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = parse_annotations(self.root / LISTS / "list_98pt_rect_attr_train.txt")
        test = parse_annotations(self.root / LISTS / "list_98pt_rect_attr_test.txt")
        missing = [r["image"] for r in train[:1] + test[:1] if not (self.root / "WFLW_images" / r["image"]).is_file()]
        if missing:
            require_layout(self.root, [f"WFLW_images/{missing[0]}"], "WFLW", LAYOUT.format(root=self.root), SOURCE)
        if self.val_size >= len(train):
            raise UserError(f"data.val_size={self.val_size} leaves no training face (the train list has {len(train)}).")
        if self.val_size > 0:  # held out of train with a fixed seed
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
            val, train = [train[i] for i in sorted(order[:self.val_size])], [train[i] for i in sorted(order[self.val_size:])]
        else:  # the original recipe validates on the test set
            val = test
        self.train_set, self.val_set, self.test_set = (WFLWFaces(self.root, r, self.image_size, self.margin) for r in (train, val, test))
