"""Readers of the two published WFLW annotation layouts (for tasks.dense.data.wflw), into one
record per face: points (98, 2), visible (98,), box (4,) or None, attributes (6,) or None,
image (path under the layout's image folder), for mmpose's JSON its own centre and scale,
and for test faces a `tag` whose bit i marks the subset SUBSETS[i].

- raw (wywu.github.io): WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt,
  one face per line: 196 coordinates, the box (x_min y_min x_max y_max), 6 attributes
  (pose, expression, illumination, make-up, occlusion, blur), the image path under
  WFLW_images/. Test subsets: WFLW_annotations/list_98pt_test/list_98pt_test_<subset>.txt,
  196 coordinates (sometimes followed by the box and attributes) and the image path.
- mmpose (tools/dataset_converters/wflw2coco.py): annotations/face_landmarks_wflw_{train,test}.json
  and face_landmarks_wflw_test_<subset>.json in COCO layout, keypoints [x, y, v] * 98,
  `center` = the tight landmark box's centre, `scale` = ceil(max(w, h)) / 200; images under images/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tasks.errors import UserError

NUM_POINTS = 98
# Subset names in the order of the attribute columns (a face's tag has bit i set for SUBSETS[i]).
SUBSETS = ("largepose", "expression", "illumination", "makeup", "occlusion", "blur")
RAW_LISTS = "WFLW_annotations/list_98pt_rect_attr_train_test"
RAW_SUBSETS = "WFLW_annotations/list_98pt_test"
MMPOSE_ANNOTATIONS = "annotations"


def parse_raw_list(path: Path) -> list[dict]:
    """Records of a list_98pt_rect_attr_*.txt file (207 fields per line)."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 * NUM_POINTS + 4 + 6 + 1:
            raise UserError(
                f"{path}:{number}: expected 207 fields (196 coordinates, 4 box, 6 attributes, "
                f"image path), got {len(fields)}."
            )
        values = np.array(fields[:-1], dtype=np.float64)
        records.append(
            {
                "points": values[:196].reshape(NUM_POINTS, 2),
                "visible": np.ones(NUM_POINTS),
                "box": values[196:200],
                "attributes": values[200:206].astype(int),
                "image": fields[-1],
            }
        )
    return records


def parse_raw_subset(path: Path) -> list[tuple[str, np.ndarray]]:
    """(image path, points) of a list_98pt_test_<subset>.txt file (197 or 207 fields per line)."""
    faces = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (2 * NUM_POINTS + 1, 2 * NUM_POINTS + 11):
            raise UserError(
                f"{path}:{number}: expected 197 fields (196 coordinates, image path) or 207, got {len(fields)}."
            )
        faces.append((fields[-1], np.array(fields[:196], dtype=np.float64).reshape(NUM_POINTS, 2)))
    return faces


def parse_mmpose_json(path: Path) -> list[dict]:
    """Records of one of mmpose's COCO-style WFLW files, in annotation order (faces whose
    keypoints are all zero are skipped, as mmpose's FaceWFLWDataset does)."""
    try:
        data = json.loads(path.read_text())
        names = {image["id"]: image["file_name"] for image in data["images"]}
        records = []
        for ann in sorted(data["annotations"], key=lambda a: a["id"]):
            keypoints = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            if keypoints.shape[0] != NUM_POINTS:
                raise UserError(
                    f"{path}: annotation {ann['id']} has {keypoints.shape[0]} keypoints, WFLW has {NUM_POINTS}."
                )
            if keypoints.max() == 0:
                continue
            records.append(
                {
                    "points": keypoints[:, :2],
                    "visible": np.minimum(1, keypoints[:, 2]),
                    "box": None,
                    "attributes": None,
                    "image": names[ann["image_id"]],
                    "center": np.array(ann["center"], dtype=np.float64),
                    "scale": float(ann["scale"]),
                }
            )
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(
            f"{path} is not an mmpose WFLW annotation file (COCO layout with keypoints, center, scale): {err!r}."
        ) from None
    return records


def face_key(image: str, points: np.ndarray) -> tuple:
    """Identifies a face across files: its image and its points to 0.01 px."""
    return image, tuple(np.round(points, 2).ravel().tolist())


def tag_subsets(test: list[dict], subsets: dict[str, list[tuple[str, np.ndarray]]], source: Path) -> None:
    """Set each test record's `tag` from the subset lists (bit i for SUBSETS[i])."""
    index = {face_key(r["image"], r["points"]): r for r in test}
    for r in test:
        r["tag"] = 0
    for bit, name in enumerate(SUBSETS):
        for image, points in subsets.get(name, []):
            record = index.get(face_key(image, points))
            if record is None:
                raise UserError(
                    f"{source}: a face of the '{name}' subset ({image}) is not in the test annotations; "
                    "the subset files and the test list come from different releases."
                )
            record["tag"] |= 1 << bit


def tag_from_attributes(test: list[dict]) -> None:
    """The subsets by the test list's own attribute columns (the subsets' definition)."""
    for r in test:
        r["tag"] = sum(1 << bit for bit, flag in enumerate(r["attributes"]) if flag)


def read_raw(root: Path) -> tuple[list[dict], list[dict], str]:
    """(train, test, where the subsets came from)."""
    train = parse_raw_list(root / RAW_LISTS / "list_98pt_rect_attr_train.txt")
    test = parse_raw_list(root / RAW_LISTS / "list_98pt_rect_attr_test.txt")
    files = {name: root / RAW_SUBSETS / f"list_98pt_test_{name}.txt" for name in SUBSETS}
    if all(path.is_file() for path in files.values()):
        tag_subsets(test, {name: parse_raw_subset(path) for name, path in files.items()}, root / RAW_SUBSETS)
        return train, test, str(root / RAW_SUBSETS)
    tag_from_attributes(test)
    return train, test, f"the attribute columns of {RAW_LISTS}/list_98pt_rect_attr_test.txt"


def read_mmpose(root: Path) -> tuple[list[dict], list[dict], str]:
    folder = root / MMPOSE_ANNOTATIONS
    train = parse_mmpose_json(folder / "face_landmarks_wflw_train.json")
    test = parse_mmpose_json(folder / "face_landmarks_wflw_test.json")
    files = {name: folder / f"face_landmarks_wflw_test_{name}.json" for name in SUBSETS}
    present = {name: path for name, path in files.items() if path.is_file()}
    subsets = {name: [(r["image"], r["points"]) for r in parse_mmpose_json(path)] for name, path in present.items()}
    tag_subsets(test, subsets, folder)
    source = f"{len(present)} subset files in {folder}" if present else "no face_landmarks_wflw_test_<subset>.json"
    return train, test, source
