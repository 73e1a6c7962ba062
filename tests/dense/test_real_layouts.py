"""CelebAMask-HQ and WFLW: tiny fixtures in the documented layouts load through the real
loaders; a missing folder fails with the layout and the source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.data.celebamask import CLASS_NAMES, PARTS, CelebAMaskDataModule, merge_parts
from tasks.data.wflw import FLIP_INDEX, WFLWDataModule
from tasks.errors import UserError
from tests.conftest import TINY, run_in_process


def make_celebamask(root: Path) -> None:
    """Images 0..3 (1024 px in the real set; 64 px here) with CelebA indices in the
    train (0, 3), val (1) and test (2) ranges; masks of 32 px (512 px in the real set)."""
    (root / "CelebA-HQ-img").mkdir(parents=True)
    (root / "CelebAMask-HQ-mask-anno" / "0").mkdir(parents=True)
    rows = ["idx orig_idx orig_file", "0 119613 119614.jpg", "1 170000 170001.jpg", "2 190000 190001.jpg", "3 5 6.jpg"]
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "CelebA-HQ-img" / f"{i}.jpg")

    def part(i: int, name: str, box: tuple[int, int, int, int]) -> None:
        mask = np.zeros((32, 32), np.uint8)
        mask[box[1]:box[3], box[0]:box[2]] = 255
        Image.fromarray(mask).save(root / "CelebAMask-HQ-mask-anno" / "0" / f"{i:05d}_{name}.png")

    for i in range(4):
        part(i, "skin", (4, 4, 28, 28))
        part(i, "hair", (0, 0, 32, 8))      # overlaps skin: hair comes later, so it wins
        part(i, "l_eye", (8, 12, 12, 14))
        part(i, "r_eye", (20, 12, 24, 14))


def make_wflw(root: Path) -> dict:
    """Two training faces and one test face; one marked landmark is a bright dot."""
    images = root / "WFLW_images" / "0--Parade"
    lists = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    images.mkdir(parents=True)
    lists.mkdir(parents=True)
    rng = np.random.default_rng(1)
    lines = {"train": [], "test": []}
    for n, split in enumerate(["train", "train", "test"]):
        picture = np.zeros((120, 160, 3), np.uint8)
        box = (40.0 + n, 30.0, 100.0 + n, 90.0)  # 60 x 60 face box
        points = rng.uniform((box[0], box[1]), (box[2], box[3]), (98, 2))
        points[60], points[72] = (55.0 + n, 50.0), (85.0 + n, 50.0)  # outer eye corners
        x, y = points[60].round().astype(int)
        picture[y - 1:y + 2, x - 1:x + 2] = 255  # 3x3 dot centred on point 60
        name = f"0_Parade_marchingband_1_{n}.jpg"
        Image.fromarray(picture).save(images / name, quality=100)
        fields = [f"{v:.3f}" for v in points.ravel()] + [str(int(b)) for b in box] + ["0", "1", "0", "0", "1", "0"] + [f"0--Parade/{name}"]
        lines[split].append(" ".join(fields))
    for split, rows in lines.items():
        (lists / f"list_98pt_rect_attr_{split}.txt").write_text("\n".join(rows) + "\n")
    return {"box": box}


def test_celebamask_fixture_loads_with_merged_labels_and_split(tmp_path):
    make_celebamask(tmp_path)
    data = CelebAMaskDataModule(root=str(tmp_path), image_size=32, crop_size=None, batch_size=2)
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (2, 1, 1)
    assert data.num_classes == 19 and len(CLASS_NAMES) == 19 and CLASS_NAMES[PARTS.index("hair") + 1] == "hair"
    x, labels = data.val_set[0]
    assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
    skin, hair, l_eye, r_eye = (CLASS_NAMES.index(n) for n in ("skin", "hair", "l_eye", "r_eye"))
    assert (skin, hair, l_eye, r_eye) == (1, 13, 4, 5)
    assert labels[2, 2].item() == hair and labels[6, 6].item() == hair     # hair drawn over skin
    assert labels[20, 20].item() == skin and labels[30, 30].item() == 0     # skin; background
    assert labels[13, 10].item() == l_eye and labels[13, 22].item() == r_eye
    batch = next(iter(data.train_dataloader()))
    assert batch[0].shape == (2, 3, 32, 32) and batch[1].dtype == torch.long


def test_celebamask_missing_parts_stay_background(tmp_path):
    make_celebamask(tmp_path)
    (tmp_path / "CelebAMask-HQ-mask-anno" / "0" / "00001_skin.png").unlink()
    labels = merge_parts(tmp_path, 1, size=32)
    assert labels[20, 20] == 0 and labels[2, 2] == 13


def test_celebamask_missing_data_names_layout_and_source(tmp_path):
    with pytest.raises(UserError) as err:
        CelebAMaskDataModule(root=str(tmp_path / "nowhere"))
    text = str(err.value)
    assert "CelebA-HQ-img" in text and "CelebAMask-HQ-mask-anno" in text and "github.com/switchablenorms" in text


def test_celebamask_mapping_without_images_is_reported(tmp_path):
    make_celebamask(tmp_path)
    (tmp_path / "CelebA-HQ-img" / "2.jpg").unlink()
    with pytest.raises(UserError, match="2.jpg"):
        CelebAMaskDataModule(root=str(tmp_path)).setup()


def test_wflw_fixture_crops_faces_and_maps_points(tmp_path):
    make_wflw(tmp_path)
    data = WFLWDataModule(root=str(tmp_path), image_size=48, margin=1.25, val_size=1)
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (1, 1, 1)
    assert data.num_keypoints == 98 and data.interocular == (60, 72)
    crop, points, visible = data.test_set[0]
    assert crop.shape == (3, 48, 48) and points.shape == (98, 2) and visible.sum() == 98
    # box 60 px wide x 1.25 = 75 px -> 48 px: scale 0.64, centred on the box centre (72, 60)
    scale = 48 / 75
    expected = (torch.tensor([57.0, 50.0]) - torch.tensor([72.0, 60.0])) * scale + 23.5
    assert torch.allclose(points[60], expected, atol=1e-3)
    assert (points[72] - points[60]).norm().item() == pytest.approx(30 * scale, rel=1e-4)
    # the bright dot drawn at point 60 is where the crop's point 60 is
    peak = divmod(int(crop[0].argmax()), 48)
    assert abs(peak[1] - points[60, 0].item()) <= 1 and abs(peak[0] - points[60, 1].item()) <= 1


def test_wflw_validates_on_test_with_val_size_zero(tmp_path):
    make_wflw(tmp_path)
    data = WFLWDataModule(root=str(tmp_path), image_size=32, val_size=0)
    data.setup()
    assert len(data.train_set) == 2 and data.val_set.records == data.test_set.records


def test_wflw_flip_pairs_match_mmpose():
    # mmpose's WFLW dataset info, written out: contour, brows, nose, eyes, mouth, pupils.
    pairs = [(i, 32 - i) for i in range(16)] + [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49),
                                                  (40, 48), (41, 47), (55, 59), (56, 58), (60, 72), (61, 71), (62, 70),
                                                  (63, 69), (64, 68), (65, 75), (66, 74), (67, 73), (76, 82), (77, 81),
                                                  (78, 80), (83, 87), (84, 86), (88, 92), (89, 91), (93, 95), (96, 97)]
    expected = list(range(98))
    for a, b in pairs:
        expected[a], expected[b] = b, a
    assert list(FLIP_INDEX) == expected


def test_wflw_missing_data_and_bad_lines_are_user_errors(tmp_path):
    with pytest.raises(UserError) as err:
        WFLWDataModule(root=str(tmp_path / "nowhere"))
    assert "list_98pt_rect_attr_train.txt" in str(err.value) and "wywu.github.io" in str(err.value)
    make_wflw(tmp_path)
    path = tmp_path / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / "list_98pt_rect_attr_test.txt"
    path.write_text("1 2 3 image.jpg\n")
    with pytest.raises(UserError, match="207 fields"):
        WFLWDataModule(root=str(tmp_path), val_size=1).setup()


@pytest.mark.slow
def test_original_recipes_run_on_the_fixtures(tmp_path):
    make_celebamask(tmp_path / "celeba")
    seg = run_in_process(["experiment=seg_celebamask", *TINY, f"data.root={tmp_path / 'celeba'}", "data.image_size=64",
                          "data.crop_size=48", "data.batch_size=2", "data.num_workers=0", "data.pin_memory=false"], tmp_path / "seg")
    assert 0 <= seg["test"]["test/miou"] <= 1
    make_wflw(tmp_path / "wflw")
    lm = run_in_process(["experiment=landmarks_wflw", *TINY, f"data.root={tmp_path / 'wflw'}", "data.image_size=64",
                         "data.val_size=1", "data.batch_size=2", "data.num_workers=0", "data.pin_memory=false",
                         "model.backbone.name=resnet18"], tmp_path / "lm")
    assert lm["test"]["test/nme"] > 0
