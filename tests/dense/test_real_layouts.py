"""CelebAMask-HQ and WFLW: tiny fixtures in the documented layouts (tests.dense.fixtures) load
through the real loaders with the original recipes' labels, crops, splits and subsets; a
missing folder fails with the layout and the source; the recipes run end to end and log the
metrics that the reference formulas give on the same predictions."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from tasks.dense.data.celebamask import PART_ORDERS, CelebAMaskDataModule, merge_parts
from tasks.dense.data.wflw import CAVEAT, FLIP_INDEX, WFLWDataModule
from tasks.errors import UserError
from tests.conftest import TINY, run_in_process
from tests.dense.fixtures import make_celebamask, make_wflw, make_wflw_mmpose
from tests.dense.recompute import landmark_metrics, miou, predictions

REPFUSION_CLASSES = (
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
)  # RepFusion's CelebAHQMask.CLASSES


def celeba(root, **kwargs) -> CelebAMaskDataModule:
    data = CelebAMaskDataModule(root=str(root), image_size=32, batch_size=2, **kwargs)
    data.setup()
    return data


def test_celebamask_default_is_repfusions_18_parts_without_background(tmp_path):
    make_celebamask(tmp_path)
    data = celeba(tmp_path)
    assert data.class_names == REPFUSION_CLASSES and data.num_classes == 18 and data.flip_pairs == ()
    assert (data.train_set.indices, data.val_set.indices, data.test_set.indices) == ([0, 3], [1], [2, 4, 5])
    x, labels = data.val_set[0]
    assert x.shape == (3, 32, 32) and labels.dtype == torch.int64
    assert labels[2, 2].item() == 255  # background is ignored
    assert (labels[20, 20].item(), labels[13, 10].item(), labels[13, 22].item()) == (0, 3, 4)  # skin, l_eye, r_eye
    assert labels[30, 10].item() == 15 and labels[2, 28].item() == 16  # cloth, hair
    assert labels[30, 30].item() == 16  # hair is drawn after cloth in RepFusion's order


def test_celebamask_authors_order_with_background_restores_the_previous_labels(tmp_path):
    make_celebamask(tmp_path)
    data = celeba(tmp_path, class_order="authors", with_background=True, flip_swap_lr=True)
    assert data.class_names == ("background", *PART_ORDERS["authors"]) and data.num_classes == 19
    assert data.flip_pairs == ((4, 5), (6, 7), (8, 9))
    _, labels = data.val_set[0]
    assert (labels[2, 2].item(), labels[20, 20].item(), labels[2, 28].item(), labels[13, 10].item()) == (0, 1, 13, 4)
    assert labels[30, 30].item() == 18  # cloth last in the authors' order
    # without background, the authors' order keeps its indices minus one
    assert celeba(tmp_path, class_order="authors").val_set[0][1][30, 30].item() == 17


def test_celebamask_reads_repfusions_split_files_and_merged_masks(tmp_path):
    make_celebamask(tmp_path)
    parts, merged = celeba(tmp_path, split="mmseg"), celeba(tmp_path, split="mmseg", masks="merged")
    assert (parts.train_set.indices, parts.val_set.indices, parts.test_set.indices) == ([1, 3], [0], [2])
    for i in range(2):
        assert torch.equal(parts.train_set[i][1], merged.train_set[i][1])
    with pytest.raises(UserError, match="class_order=mmseg"):
        CelebAMaskDataModule(root=str(tmp_path), masks="merged", class_order="authors")
    (tmp_path / "val_celebahqmask.txt").write_text("12a\n")
    with pytest.raises(UserError, match="image number"):
        celeba(tmp_path, split="mmseg")


def test_celebamask_missing_parts_stay_background(tmp_path):
    make_celebamask(tmp_path)
    (tmp_path / "CelebAMask-HQ-mask-anno" / "0" / "00001_skin.png").unlink()
    labels = merge_parts(tmp_path, 1, size=32, order="mmseg")
    assert labels[20, 20] == 0 and labels[2, 28] == 17  # merged values: 0 background, 17 = hair (1-based)


def test_celebamask_missing_data_names_layout_and_source(tmp_path):
    with pytest.raises(UserError) as err:
        CelebAMaskDataModule(root=str(tmp_path / "nowhere"))
    text = str(err.value)
    assert "CelebA-HQ-img" in text and "CelebAMask-HQ-mask-anno" in text and "github.com/switchablenorms" in text
    make_celebamask(tmp_path)
    (tmp_path / "test_celebahqmask.txt").unlink()
    with pytest.raises(UserError, match="test_celebahqmask.txt"):
        CelebAMaskDataModule(root=str(tmp_path), split="mmseg")


def test_celebamask_mapping_without_images_is_reported(tmp_path):
    make_celebamask(tmp_path)
    (tmp_path / "CelebA-HQ-img" / "2.jpg").unlink()
    with pytest.raises(UserError, match="2.jpg"):
        CelebAMaskDataModule(root=str(tmp_path)).setup()


def wflw(root, **kwargs) -> WFLWDataModule:
    data = WFLWDataModule(root=str(root), **{"image_size": 48, **kwargs})
    data.setup()
    return data


def test_wflw_crop_is_mmposes_tight_landmark_box(tmp_path):
    faces = make_wflw(tmp_path)
    data = wflw(tmp_path)
    crop, points, visible, tag = data.test_set[0]
    assert crop.shape == (3, 48, 48) and visible.sum() == 98
    # mmpose: centre of the tight box around the 98 points, side ceil(max(w, h)) * 1.25, centre at pixel S / 2
    truth = np.round(faces[3]["points"], 6)
    low, high = truth.min(0), truth.max(0)
    side = math.ceil(max(high - low)) * 1.25
    expected = (truth - (low + high) / 2) * 48 / side + 24
    assert np.allclose(points.numpy(), expected, atol=1e-3)
    # the bright dot drawn at point 60 is where the crop's point 60 is
    peak = divmod(int(crop[0].argmax()), 48)
    assert abs(peak[1] - points[60, 0].item()) <= 1 and abs(peak[0] - points[60, 1].item()) <= 1


def test_wflw_rect_crop_box_restores_the_previous_crop(tmp_path):
    make_wflw(tmp_path)
    data = wflw(tmp_path, crop_box="rect")
    _, points, _, _ = data.test_set[0]
    # face rectangle (43, 30)-(103, 90): 60 px x 1.25 = 75 px -> 48 px around (73, 60), centre at pixel 23.5
    expected = (torch.tensor([58.25, 50.5]) - torch.tensor([73.0, 60.0])) * 48 / 75 + 23.5
    assert torch.allclose(points[60], expected, atol=1e-3)


def test_wflw_mmpose_json_layout_gives_the_same_faces(tmp_path):
    make_wflw(tmp_path / "raw")
    make_wflw_mmpose(tmp_path / "mmpose")
    raw, json_ = wflw(tmp_path / "raw"), wflw(tmp_path / "mmpose")
    assert (raw.layout, json_.layout) == ("raw", "mmpose") and json_.subset_names == raw.subset_names
    for i in range(3):
        for a, b in zip(raw.test_set[i], json_.test_set[i]):
            assert torch.allclose(a.float(), b.float(), atol=1e-4)
    with pytest.raises(UserError, match="rect"):
        WFLWDataModule(root=str(tmp_path / "mmpose"), crop_box="rect")


def test_wflw_test_subsets_are_read_from_the_subset_lists(tmp_path):
    make_wflw(tmp_path)
    data = wflw(tmp_path)
    assert data.subset_names == ("largepose", "expression", "illumination", "makeup", "occlusion", "blur")
    # test faces: expression + occlusion, large pose + occlusion, blur
    assert [int(data.test_set[i][3]) for i in range(3)] == [2 + 16, 1 + 16, 32]
    # a subset list that names a face the test list lacks is refused
    lists = tmp_path / "WFLW_annotations" / "list_98pt_test"
    line = (lists / "list_98pt_test_blur.txt").read_text().split()
    (lists / "list_98pt_test_blur.txt").write_text(" ".join(["1.0"] + line[1:]) + "\n")
    with pytest.raises(UserError, match="blur"):
        wflw(tmp_path)


def test_wflw_subsets_fall_back_to_the_attribute_columns(tmp_path):
    make_wflw(tmp_path, subsets=False)
    data = wflw(tmp_path)
    assert [int(data.test_set[i][3]) for i in range(3)] == [18, 17, 32]


def test_wflw_trains_on_every_face_and_validates_on_test_with_one_caveat(tmp_path, caplog):
    make_wflw(tmp_path)
    data = WFLWDataModule(root=str(tmp_path), image_size=32)
    with caplog.at_level(logging.WARNING, logger="tasks.dense.data.wflw"):
        data.setup("fit")
        data.setup("test")
    assert len(data.train_set) == 3 and data.val_set.records == data.test_set.records
    assert [r.getMessage() for r in caplog.records].count(CAVEAT) == 1
    held_out = wflw(tmp_path, val_size=1)
    assert (len(held_out.train_set), len(held_out.val_set)) == (2, 1)


def test_wflw_mmpose_augmentation_crops_from_a_wider_context(tmp_path):
    from tests.dense.test_generated_data import fake_trainer

    make_wflw(tmp_path)
    data = WFLWDataModule(root=str(tmp_path), image_size=48, batch_size=3)
    data.setup()
    assert data.train_set[0][0].shape == (3, 96, 96)  # context crop: twice as wide, same density
    for epoch in range(4):
        data.trainer = fake_trainer(epoch)
        x, points, visible, tags = data.augment(next(iter(data.train_dataloader())))
        assert x.shape == (3, 3, 48, 48) and tags.tolist() == [0, 0, 0]
        for image, p in zip(x, points):  # the dot at point 60 (renumbered 72 by a flip) moved with the points
            row, col = divmod(int(image[0].argmax()), 48)
            assert min((p[k] - torch.tensor([col, row])).norm().item() for k in (60, 72)) <= 1.5


def test_wflw_flip_pairs_match_mmpose():
    # mmpose's WFLW dataset info, written out: contour, brows, nose, eyes, mouth, pupils.
    pairs = [(i, 32 - i) for i in range(16)] + [
        (33, 46),
        (34, 45),
        (35, 44),
        (36, 43),
        (37, 42),
        (38, 50),
        (39, 49),
        (40, 48),
        (41, 47),
        (55, 59),
        (56, 58),
        (60, 72),
        (61, 71),
        (62, 70),
        (63, 69),
        (64, 68),
        (65, 75),
        (66, 74),
        (67, 73),
        (76, 82),
        (77, 81),
        (78, 80),
        (83, 87),
        (84, 86),
        (88, 92),
        (89, 91),
        (93, 95),
        (96, 97),
    ]
    expected = list(range(98))
    for a, b in pairs:
        expected[a], expected[b] = b, a
    assert list(FLIP_INDEX) == expected


def test_wflw_missing_data_and_bad_lines_are_user_errors(tmp_path):
    with pytest.raises(UserError) as err:
        WFLWDataModule(root=str(tmp_path / "nowhere"))
    assert "list_98pt_rect_attr_train.txt" in str(err.value) and "wywu.github.io" in str(err.value)
    assert "annotations/face_landmarks_wflw_{train,test}.json" in str(err.value)  # the mmpose layout too
    make_wflw(tmp_path)
    path = tmp_path / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / "list_98pt_rect_attr_test.txt"
    path.write_text("1 2 3 image.jpg\n")
    with pytest.raises(UserError, match="207 fields"):
        WFLWDataModule(root=str(tmp_path), val_size=1).setup()


# two test batches (3 images of 2), so the logged metrics must accumulate over batches
FIXTURE_DATA = ["data.num_workers=0", "data.pin_memory=false", "data.batch_size=2", "trainer.limit_test_batches=1.0"]


@pytest.mark.slow
def test_celebamask_recipe_logs_mmsegs_miou(tmp_path):
    make_celebamask(tmp_path / "celeba")
    overrides = [
        "experiment=seg_celebamask",
        *TINY,
        f"data.root={tmp_path / 'celeba'}",
        "data.image_size=64",
        "data.crop_size=48",
        *FIXTURE_DATA,
        "trainer.val_check_interval=1.0",
        "trainer.check_val_every_n_epoch=1",
    ]
    summary = run_in_process(overrides, tmp_path / "seg")
    preds, batches = predictions(overrides, tmp_path / "seg", summary)
    expected, per_class = miou(preds, [b[0] for b in batches], 18)
    assert summary["test"]["test/miou"] == pytest.approx(expected, abs=1e-6)
    for name, value in zip(REPFUSION_CLASSES, per_class):
        assert (f"test/iou_{name}" in summary["test"]) == (not np.isnan(value))
        if not np.isnan(value):
            assert summary["test"][f"test/iou_{name}"] == pytest.approx(value, abs=1e-6)


@pytest.mark.slow
def test_wflw_recipe_logs_mmposes_nme_and_the_subset_report(tmp_path):
    make_wflw(tmp_path / "wflw")
    overrides = [
        "experiment=landmarks_wflw",
        *TINY,
        f"data.root={tmp_path / 'wflw'}",
        "data.image_size=64",
        *FIXTURE_DATA,
        "model.backbone.name=resnet18",
    ]
    summary = run_in_process(overrides, tmp_path / "lm")
    preds, batches = predictions(overrides, tmp_path / "lm", summary)
    points, visible, tags = (torch.cat([b[i] for b in batches]).numpy() for i in range(3))
    subsets = ("largepose", "expression", "illumination", "makeup", "occlusion", "blur")
    expected = landmark_metrics(torch.cat(preds).numpy(), points, visible, (60, 72), tags, subsets)
    logged = summary["test"]
    assert set(logged) >= {f"test/{k}" for k in expected}
    for key, value in expected.items():
        assert logged[f"test/{key}"] == pytest.approx(value, abs=2e-4), key


def test_a_damaged_celebamask_or_wflw_file_is_named(tmp_path):
    """Images and masks go through tasks.io.files.read_image: one UserError naming the file."""
    from tasks.dense.data.celebamask import IMAGES, MASKS

    make_celebamask(tmp_path / "celeba")
    data = celeba(tmp_path / "celeba")
    image = tmp_path / "celeba" / IMAGES / "1.jpg"
    image.write_bytes(image.read_bytes()[:40])
    with pytest.raises(UserError, match=rf"^CelebAMask-HQ image {image} is a truncated or damaged image"):
        data.val_set[0]
    mask = next((tmp_path / "celeba" / MASKS / "0").glob("00002_*.png"))
    mask.write_text("not a png")
    with pytest.raises(UserError, match=rf"^CelebAMask-HQ part mask {mask} is not an image PIL can read: it is a text"):
        data.test_set[0]
    make_wflw(tmp_path / "wflw")
    faces = wflw(tmp_path / "wflw")
    record = faces.test_set.records[0]
    face = faces.test_set.images / record["image"]
    face.write_bytes(b"")
    with pytest.raises(UserError, match=rf"^WFLW image {face} is"):
        faces.test_set[0]
