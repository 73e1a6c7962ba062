"""digits_seg and shapes_landmarks: labels, splits, and augmentation that keeps targets on the image."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import numpy as np
import torch

from tasks.data import RandomAffine, load_digit_images
from tasks.dense.data.digits_seg import DigitsSegDataModule, digit_masks, mosaics
from tasks.dense.data.shapes_landmarks import FLIP_INDEX, ShapesLandmarksDataModule, generate, render_face


def fake_trainer(epoch: int = 0) -> SimpleNamespace:
    """What ImageDataModule._augment_generator reads from a trainer."""
    progress = SimpleNamespace(current=SimpleNamespace(ready=0))
    return SimpleNamespace(
        global_rank=0,
        current_epoch=epoch,
        training=True,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
    )


def test_digit_masks_class_mapping_and_ignore_band():
    image = torch.tensor([[0.0, 0.35, 0.45, 0.9]]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    masks = digit_masks(image, torch.tensor([7]), threshold=0.4, ignore_band=0.1)
    assert masks.tolist() == [[[0, 255, 255, 8]]]  # digit 7 -> class 8; near the threshold -> ignored
    assert digit_masks(image, torch.tensor([0]), 0.4, 0.0).tolist() == [[[0, 0, 1, 1]]]


def test_mosaics_use_every_digit_once_per_cell():
    x = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 3, 2, 2)
    m = torch.arange(6).view(6, 1, 1).expand(6, 2, 2)
    images, masks = mosaics(x, m, grid=2, seed=0)
    assert images.shape == (6, 3, 4, 4) and masks.shape == (6, 4, 4)
    for r in (0, 2):
        for c in (0, 2):
            assert sorted(masks[:, r, c].tolist()) == list(range(6))
            assert torch.equal(images[:, 0, r, c].long(), masks[:, r, c])  # image and mask stay together


def test_digits_seg_splits_are_real_digits_with_consistent_masks():
    data = DigitsSegDataModule()
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (1257, 270, 270)
    assert data.num_classes == 11 and data.class_names[1] == "digit0"
    x, m = data.test_set.tensors
    assert x.shape == (270, 3, 32, 32) and m.dtype == torch.long
    ink, eps = x[:, 0], 1e-5
    assert ((m[ink > 0.5 + eps] > 0) & (m[ink > 0.5 + eps] < 255)).all()  # ink: a digit class
    assert (m[ink < 0.3 - eps] == 0).all()  # dark: background
    assert (m[(ink > 0.3 + eps) & (ink < 0.5 - eps)] == 255).all()  # in between: ignored
    # every 16x16 cell holds one digit class
    cell = m[:, :16, :16]
    classes = [set(c[(c > 0) & (c < 255)].tolist()) for c in cell]
    assert all(len(c) <= 1 for c in classes)
    # the scans of the test split are exactly the classifier's test digits
    digits, _ = load_digit_images(16)
    assert any(torch.equal(x[0, :, :16, :16], d) for d in digits)


def test_signature_lists_base_keywords_for_config_validation():
    params = inspect.signature(DigitsSegDataModule).parameters
    assert {"grid", "threshold", "batch_size", "batch_augment", "seed"} <= set(params)


def test_segmentation_augment_moves_masks_with_images():
    data = DigitsSegDataModule(batch_augment=RandomAffine(degrees=20, translate_px=3, scale=(0.8, 1.2), hflip=True))
    data.trainer = fake_trainer()
    data.setup()
    x, m = data.train_set.tensors[0][:16], data.train_set.tensors[1][:16]
    ax, am = data.augment((x, m))
    assert am.dtype == torch.long and set(am.unique().tolist()) <= set(range(11)) | {255}
    # Ink stays ink: where the warped mask says "digit", the warped image is bright.
    digit = (am > 0) & (am < 255)
    assert ax[:, 0][digit].mean() > 0.6 and ax[:, 0][am == 0].mean() < 0.2
    again = data.augment((x, m))
    assert torch.equal(again[1], am)  # the same seed, epoch and batch give the same warp


def test_shapes_are_deterministic_and_keypoints_sit_on_the_drawing():
    x1, p1 = generate(4, 64, seed=3)
    x2, p2 = generate(4, 64, seed=3)
    assert torch.equal(x1, x2) and torch.equal(p1, p2)
    assert x1.shape == (4, 3, 64, 64) and p1.shape == (4, 15, 2)
    assert ((p1 > 0) & (p1 < 63)).all()
    # outer eye corners are further apart than inner ones; left points are left of right ones
    for p in p1:
        assert (p[8] - p[11]).norm() > (p[9] - p[10]).norm()
    image, points = render_face(64, np.random.default_rng(1))
    assert image.dtype == np.uint8 and points.shape == (15, 2)


def test_flip_index_is_a_mirror_involution():
    index = torch.tensor(FLIP_INDEX)
    assert torch.equal(index[index], torch.arange(15))
    assert FLIP_INDEX[8] == 11 and FLIP_INDEX[12] == 12 and FLIP_INDEX[13] == 14


def test_keypoint_augment_mirrors_and_renumbers():
    data = ShapesLandmarksDataModule(train_size=8, val_size=2, test_size=2, batch_augment=RandomAffine(hflip=True))
    data.trainer = fake_trainer()
    data.setup()
    x, p, v = data.train_set.tensors
    ax, ap, av = data.augment((x, p, v))
    flipped = (ax - x.flip(-1)).abs().amax((1, 2, 3)) < 1e-5
    assert flipped.any() and (~flipped).any()
    mirrored = p.clone()
    mirrored[..., 0] = 63 - p[..., 0]
    expected = torch.where(flipped[:, None, None], mirrored[:, list(FLIP_INDEX)], p)
    assert torch.allclose(ap, expected, atol=1e-4)
    # after the renumbering the "left" eye is still on the image's left
    assert (ap[:, 8, 0] < ap[:, 11, 0]).all()
