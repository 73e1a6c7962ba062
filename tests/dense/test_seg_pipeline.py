"""mmseg's training pipeline on the device (tasks.dense.seg_pipeline) and its photometric
distortion: cv2's resize rules, padding, flips that rename no class, cat_max_ratio's redraws."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks.dense.photometric import PhotoMetricDistortion, hsv_to_rgb, rgb_to_hsv
from tasks.dense.seg_pipeline import ResizeCropFlip

MEAN = (0.485, 0.456, 0.406)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_label_maps_resize_with_cv2s_nearest_rule():
    labels = torch.arange(16).view(1, 4, 4)
    out = torch.arange(6)[None]
    resized = ResizeCropFlip._nearest(labels, out, out, torch.tensor([6]))
    # cv2.INTER_NEAREST reads source index floor(i * 4 / 6) = 0, 0, 1, 2, 2, 3
    # (a centred rule would give 0, 1, 1, 2, 3, 3)
    rows = torch.tensor([0, 0, 1, 2, 2, 3])
    assert torch.equal(resized[0], labels[0][rows][:, rows])


def test_small_resizes_are_padded_with_the_mean_colour_and_the_ignore_index():
    x, labels = torch.rand(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32))
    pipeline = ResizeCropFlip(
        crop_size=24, ratio_range=(0.5, 0.5), cat_max_ratio=1.0, flip_prob=0.0, photometric=None, pad_value=MEAN
    )
    image, label = pipeline(x, labels, generator())
    assert image.shape == (2, 3, 24, 24) and label.shape == (2, 24, 24)
    # resized to 16 x 16 (bilinear with half-pixel centres, as cv2.resize), at the top left; padding after it
    resized = F.interpolate(x, size=16, mode="bilinear", align_corners=False)
    assert torch.allclose(image[:, :, :16, :16], resized, atol=1e-6)
    assert torch.equal(label[:, :16, :16], labels[:, ::2, ::2])
    assert torch.allclose(image[:, :, 16:, :], torch.tensor(MEAN).view(1, 3, 1, 1).expand(2, 3, 8, 24))
    assert (label[:, 16:, :] == 255).all() and (label[:, :, 16:] == 255).all()


def test_flip_mirrors_image_and_labels_without_renaming_classes():
    x, labels = torch.rand(1, 3, 16, 16), torch.randint(0, 18, (1, 16, 16))
    pipeline = ResizeCropFlip(crop_size=16, ratio_range=(1.0, 1.0), cat_max_ratio=1.0, flip_prob=1.0, photometric=None)
    image, label = pipeline(x, labels, generator())
    assert torch.allclose(image, x.flip(-1), atol=1e-6) and torch.equal(label, labels.flip(-1))


def test_crops_come_from_the_resized_image_at_the_drawn_offset():
    x = torch.arange(64.0).view(1, 1, 8, 8).expand(1, 3, 8, 8) / 64
    labels = torch.arange(64).view(1, 8, 8)
    pipeline = ResizeCropFlip(crop_size=4, ratio_range=(1.0, 1.0), cat_max_ratio=1.0, flip_prob=0.0, photometric=None)
    for seed in range(5):
        image, label = pipeline(x, labels, generator(seed))
        top, left = divmod(int(label[0, 0, 0]), 8)
        assert torch.equal(label[0], labels[0, top : top + 4, left : left + 4])
        assert torch.allclose(image[0], x[0, :, top : top + 4, left : left + 4], atol=1e-6)


def test_cat_max_ratio_redraws_crops_dominated_by_one_class():
    labels = torch.zeros(3, 64, 64, dtype=torch.long)
    labels[0, 0:12, 40:48] = 1  # sample 0: candidate 0 sees class 0 only; candidate 1 holds 96 px of class 1
    labels[1] = 2  # sample 1: one class everywhere, every candidate fails: the 11th is used
    labels[2, :, :] = 255  # sample 2: 100 px of class 0, 20 of class 1, the rest ignored:
    labels[2, 0:10, 0:10] = 0  # 100 / 120 > 0.75 although class 0 covers 100 / 256 of the crop
    labels[2, 10:12, 0:10] = 1
    offsets = torch.zeros(3, 11, 2, dtype=torch.long)
    offsets[0, 0], offsets[0, 1] = torch.tensor([30, 0]), torch.tensor([0, 36])
    offsets[1, :, 0] = torch.arange(11)
    offsets[2, 10] = torch.tensor([5, 5])
    pipeline = ResizeCropFlip(crop_size=16, cat_max_ratio=0.75)
    chosen = pipeline._choose_crops(labels, torch.tensor([64, 64, 64]), offsets)
    assert chosen.tolist() == [[0, 36], [10, 0], [5, 5]]
    first = ResizeCropFlip(crop_size=16, cat_max_ratio=1.0)._choose_crops(labels, torch.tensor([64] * 3), offsets)
    assert first.tolist() == [[30, 0], [0, 0], [0, 0]]  # without the ratio: the first draw


def test_hsv_round_trip_and_hue_in_opencv_units():
    x = torch.rand(4, 3, 8, 8)
    assert torch.allclose(hsv_to_rgb(*rgb_to_hsv(x)), x, atol=1e-5)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    h, s, v = rgb_to_hsv(red)
    # +18 of OpenCV's 180 hue units = +36 degrees: pure red becomes (1, 0.6, 0)
    assert torch.allclose(hsv_to_rgb(h + 18 / 180, s, v).flatten(), torch.tensor([1.0, 0.6, 0.0]), atol=1e-6)


def test_photometric_distortion_applies_each_step_with_probability_one_half():
    x = torch.tensor([0.6, 0.4, 0.2]).view(1, 3, 1, 1).expand(4000, 3, 1, 1)
    out = PhotoMetricDistortion()(x, generator(1))
    unchanged = (out - x).abs().amax((1, 2, 3)) < 1e-6
    # untouched only when all four coins say no: 1/16 (binomial sd 0.004 at n = 4000)
    assert abs(unchanged.double().mean().item() - 1 / 16) < 0.016
    again = PhotoMetricDistortion()(x, generator(1))
    assert torch.equal(out, again)


def test_hue_steps_are_whole_opencv_units_from_minus_18_to_17():
    red = torch.tensor([0.5, 0.0, 0.0]).view(1, 3, 1, 1).expand(4000, 3, 1, 1)
    hue, saturation, _ = rgb_to_hsv(PhotoMetricDistortion()(red, generator(2)))
    units = hue[saturation > 0.05].flatten() * 180  # brightness, contrast (no clipping) and saturation keep hue 0
    steps = torch.where(units > 90, units - 180, units)
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # numpy's randint(-18, 18): whole units
    assert set(steps.round().long().tolist()) == set(range(-18, 18))
