"""timm's recipe toolbox as seeded batch augmentations: each equals timm's own transform
under the same seed, leaves the global generators as they were, is a function of the
batch's generator, and a resumed classifier run with all three ends where a straight one does."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from timm.data import rand_augment_transform

from tasks.data.toolbox import MixupCutmix, RandAugment, RandomErasing, seeded_globals
from tasks.errors import UserError
from tests.conftest import run_in_process


def images(n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255


def test_seeded_globals_are_repeatable_and_restore_the_global_state():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    draws = []
    for seed in (5, 5, 6):
        with seeded_globals(torch.Generator().manual_seed(seed)):
            draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1] != draws[2]
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_rand_augment_equals_timms_transform_per_image_under_the_same_seed():
    x = images()
    ours = RandAugment("rand-m9-mstd0.5-inc1", mean=(0.5, 0.5, 0.5))(x, torch.Generator().manual_seed(3))
    timm_ra = rand_augment_transform("rand-m9-mstd0.5-inc1", {"img_mean": (128, 128, 128), "translate_const": 7})
    from PIL import Image

    with seeded_globals(torch.Generator().manual_seed(3)):
        expected = [
            np.asarray(timm_ra(Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()))) for im in x
        ]
    assert torch.equal(ours, torch.from_numpy(np.stack(expected)).permute(0, 3, 1, 2).float() / 255)
    assert not torch.equal(ours, x)
    assert torch.equal(RandAugment("rand-n0-m9")(x, torch.Generator().manual_seed(3)), x)  # no ops: identity


def test_posterize_at_the_top_magnitude_gives_black_instead_of_a_pillow_error():
    # rand-m10-inc1: PosterizeIncreasing keeps 4 - 10 / 10 * 4 = 0 bits, which Pillow >= 10 refuses
    x = images(n=16)
    out = RandAugment("rand-m10-n1-inc1", mean=(0.5,) * 3)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    posterize = next(op for op in RandAugment("rand-m10-inc1")._transform(16).ops if op.name == "PosterizeIncreasing")
    from PIL import Image

    posterize.prob = 1.0  # the op itself, always applied
    black = posterize(Image.fromarray(np.full((4, 4, 3), 200, dtype=np.uint8)))
    assert np.asarray(black).max() == 0


def test_random_erasing_erases_one_rectangle_or_nothing():
    x = torch.randn(6, 3, 16, 16) + 5  # no zero anywhere
    assert torch.equal(RandomErasing(0.0, mode="const")(x, torch.Generator().manual_seed(0)), x)
    out = RandomErasing(1.0, mode="const")(x, torch.Generator().manual_seed(0))
    for image in out:
        rows, cols = torch.where((image == 0).all(0))
        assert len(rows) > 0 and len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    again = RandomErasing(1.0, mode="pixel")(x, torch.Generator().manual_seed(0))
    assert torch.equal(again, RandomErasing(1.0, mode="pixel")(x, torch.Generator().manual_seed(0)))
    with pytest.raises(UserError, match="probability must be in"):
        RandomErasing(1.5)


def test_mixup_is_the_convex_combination_with_the_flipped_batch():
    x, y = images(n=6), torch.tensor([0, 1, 2, 3, 4, 5])
    mixed, soft = MixupCutmix(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=6)(
        x, y, torch.Generator().manual_seed(7)
    )
    off, on = 0.1 / 6, 1 - 0.1 + 0.1 / 6  # timm's smoothed one-hot
    lam = (soft[0, 0] - off) / (on - off)  # the weight of the image's own label
    assert 0 < lam < 1
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    smooth = torch.full((6, 6), off).scatter_(1, y[:, None], on)
    assert torch.allclose(soft, lam * smooth + (1 - lam) * smooth.flip(0), atol=1e-6)
    with pytest.raises(UserError, match="even batch size"):
        MixupCutmix(num_classes=6)(x[:5], y[:5], torch.Generator().manual_seed(0))


def test_mixup_and_label_smoothing_together_are_refused():
    from tasks.models.classification import ClassificationModule

    with pytest.raises(UserError, match="model.label_smoothing=0"):
        ClassificationModule({"name": "resnet18"}, 10, optimizer=None, label_smoothing=0.1, mixup={"mixup_alpha": 1.0})


def test_resumed_run_with_the_whole_toolbox_matches_a_straight_one(tmp_path):
    common = [
        "augment=timm_recipe",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.num_sanity_val_steps=0",
        "logger=csv",
        "trainer.deterministic=true",
        "trainer.enable_model_summary=false",
        "export=false",
    ]
    straight = run_in_process(common + ["trainer.max_epochs=2"], tmp_path / "straight")
    run_in_process(common + ["trainer.max_epochs=1"], tmp_path / "split")
    resumed = run_in_process(common + ["trainer.max_epochs=2", f"resume={tmp_path / 'split'}"], tmp_path / "split")
    assert resumed["global_step"] == straight["global_step"] == 6
    assert resumed["test"] == straight["test"] and resumed["final"]["train/loss"] == straight["final"]["train/loss"]
