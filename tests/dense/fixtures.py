"""Tiny versions of the real data layouts (no real data exists here): CelebAMask-HQ with its
part masks, mapping file, and RepFusion's split files and merged masks; WFLW in the raw
layout (lists, test subset lists) and in mmpose's COCO-style JSON layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

WFLW_SUBSETS = ("largepose", "expression", "illumination", "makeup", "occlusion", "blur")


def make_celebamask(root: Path) -> None:
    """Images 0..5 (1024 px in the real set; 64 px here) with CelebA indices in the train
    (0, 3), val (1) and test (2, 4, 5) ranges; masks of 32 px (512 px in the real set): skin,
    hair, cloth, an l_eye and an r_eye box.
    RepFusion's split files put 1 and 3 in train, 0 in val, 2 in test, and its merged
    mask/<i>.png files hold the same parts in its order (0 background, 1..18)."""
    # skin (4..28)^2; hair over a right strip (x >= 24); cloth over the bottom rows (y >= 26), where it
    # meets the hair: the authors' order draws cloth last, RepFusion's draws hair last.
    (root / "CelebA-HQ-img").mkdir(parents=True)
    (root / "CelebAMask-HQ-mask-anno" / "0").mkdir(parents=True)
    (root / "mask").mkdir()
    rows = [
        "idx orig_idx orig_file",
        "0 119613 119614.jpg",
        "1 170000 170001.jpg",
        "2 190000 190001.jpg",
        "3 5 6.jpg",
        "4 190002 190003.jpg",
        "5 200000 200001.jpg",
    ]
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(rows) + "\n")
    for name, ids in (("train", [1, 3]), ("val", [0]), ("test", [2])):
        # no final newline, as RepFusion's script writes them
        (root / f"{name}_celebahqmask.txt").write_text("\n".join(map(str, ids)))
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "CelebA-HQ-img" / f"{i}.jpg")
    boxes = {
        "skin": (4, 4, 28, 28),
        "hair": (24, 0, 32, 32),
        "cloth": (0, 26, 32, 32),
        "l_eye": (8, 12, 12, 14),
        "r_eye": (20, 12, 24, 14),
    }
    repfusion = (
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
    )
    for i in range(6):
        merged = np.zeros((32, 32), np.uint8)
        for name, (x0, y0, x1, y1) in boxes.items():
            mask = np.zeros((32, 32, 3), np.uint8)  # the published masks are white-on-black
            mask[y0:y1, x0:x1] = 255
            Image.fromarray(mask).save(root / "CelebAMask-HQ-mask-anno" / "0" / f"{i:05d}_{name}.png")
        for label, name in enumerate(repfusion, start=1):
            if name in boxes:
                x0, y0, x1, y1 = boxes[name]
                merged[y0:y1, x0:x1] = label
        Image.fromarray(merged).save(root / "mask" / f"{i}.png")


def wflw_faces(seed: int = 1) -> list[dict]:
    """Three training and three test faces on 160 x 120 images; the test faces carry the
    attributes (0, 1, 0, 0, 1, 0), (1, 0, 0, 0, 1, 0), (0, 0, 0, 0, 0, 1)."""
    rng = np.random.default_rng(seed)
    faces = []
    attributes = [(0, 0, 0, 0, 0, 0)] * 3 + [(0, 1, 0, 0, 1, 0), (1, 0, 0, 0, 1, 0), (0, 0, 0, 0, 0, 1)]
    for n, attr in enumerate(attributes):
        box = (40.0 + n, 30.0, 100.0 + n, 90.0)  # 60 x 60 face rectangle
        points = rng.uniform((box[0] + 3, box[1] + 5), (box[2] - 7, box[3] - 2), (98, 2))
        points[60], points[72] = (55.25 + n, 50.5), (85.75 + n, 50.5)  # outer eye corners
        faces.append(
            {
                "split": "train" if n < 3 else "test",
                "box": box,
                "points": points,
                "attributes": attr,
                "image": f"0--Parade/0_Parade_marchingband_1_{n}.jpg",
            }
        )
    return faces


def _draw(root: Path, face: dict) -> None:
    picture = np.zeros((120, 160, 3), np.uint8)
    x, y = face["points"][60].round().astype(int)
    picture[y - 1 : y + 2, x - 1 : x + 2] = 255  # a 3x3 dot centred on point 60
    path = root / face["image"]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path, quality=100)


def make_wflw(root: Path, subsets: bool = True) -> list[dict]:
    """The raw layout (WFLW_images, the two lists, and the six test subset lists)."""
    faces = wflw_faces()
    lists = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    lists.mkdir(parents=True)
    lines = {"train": [], "test": []}
    for face in faces:
        _draw(root / "WFLW_images", face)
        coords = [f"{v:.6f}" for v in face["points"].ravel()]
        fields = coords + [str(int(b)) for b in face["box"]] + list(map(str, face["attributes"])) + [face["image"]]
        lines[face["split"]].append(" ".join(fields))
    for split, rows in lines.items():
        (lists / f"list_98pt_rect_attr_{split}.txt").write_text("\n".join(rows) + "\n")
    if subsets:
        folder = root / "WFLW_annotations" / "list_98pt_test"
        folder.mkdir()
        test = [f for f in faces if f["split"] == "test"]
        for bit, name in enumerate(WFLW_SUBSETS):
            rows = [
                " ".join([f"{v:.6f}" for v in f["points"].ravel()] + [f["image"]]) for f in test if f["attributes"][bit]
            ]
            (folder / f"list_98pt_test_{name}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    return faces


def _coco(faces: list[dict]) -> dict:
    """mmpose's wflw2coco.py layout: centre of the tight landmark box, scale ceil(max(w, h)) / 200."""
    images, annotations = [], []
    for n, face in enumerate(faces):
        points = np.round(face["points"], 6)
        (x1, y1), (x2, y2) = points.min(0), points.max(0)
        scale = math.ceil(max(x2 - x1, y2 - y1)) / 200
        images.append({"id": n, "file_name": face["image"], "height": 120, "width": 160})
        keypoints = np.concatenate([points, np.ones((98, 1))], 1).ravel().tolist()
        annotations.append(
            {
                "keypoints": keypoints,
                "image_id": n,
                "id": n,
                "num_keypoints": 98,
                "iscrowd": 0,
                "bbox": [x1, y1, (x2 - x1) / scale, (y2 - y1) / scale],
                "area": (x2 - x1) * (y2 - y1),
                "category_id": 1,
                "center": [(x1 + x2) / 2, (y1 + y2) / 2],
                "scale": scale,
            }
        )
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "face"}]}


def make_wflw_mmpose(root: Path) -> list[dict]:
    """The same faces in mmpose's layout (images/, annotations/face_landmarks_wflw_*.json)."""
    faces = wflw_faces()
    (root / "annotations").mkdir(parents=True)
    for face in faces:
        _draw(root / "images", face)
    for split in ("train", "test"):
        chosen = [f for f in faces if f["split"] == split]
        (root / "annotations" / f"face_landmarks_wflw_{split}.json").write_text(json.dumps(_coco(chosen)))
    test = [f for f in faces if f["split"] == "test"]
    for bit, name in enumerate(WFLW_SUBSETS):
        chosen = [f for f in test if f["attributes"][bit]]
        (root / "annotations" / f"face_landmarks_wflw_test_{name}.json").write_text(json.dumps(_coco(chosen)))
    return faces
