"""DataModules: the digits split, normalisation, seeded augmentation, and the real
loaders reading tiny fixtures in their documented layouts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.data import CIFARDataModule, DigitsDataModule, ImageFolderDataModule, RandomAffine, TinyImageNetDataModule
from tasks.data.digits import load_digit_images, split_indices
from tasks.errors import UserError


def test_digits_split_is_fixed_stratified_and_disjoint():
    _, labels = load_digit_images()
    first, again = split_indices(labels, 0.15, 0.15, 0), split_indices(labels, 0.15, 0.15, 0)
    assert first == again
    assert [len(first[s]) for s in ("train", "val", "test")] == [1257, 270, 270]
    assert not set(first["train"]) & set(first["test"]) and not set(first["val"]) & set(first["test"])
    counts = torch.bincount(labels[first["test"]], minlength=10)
    assert counts.min() >= 26 and counts.max() <= 28  # ~27 per class


def test_digits_normalisation_matches_the_images():
    images, _ = load_digit_images()
    assert images.shape == (1797, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert abs(images.mean().item() - DigitsDataModule.mean[0]) < 1e-3
    assert abs(images.std().item() - DigitsDataModule.std[0]) < 1e-3
    dm = DigitsDataModule()
    x = images[:4]
    assert torch.allclose(dm.denormalize(dm.normalize(x)), x, atol=1e-6)


def test_augmentation_is_a_function_of_the_generator():
    x = torch.rand(4, 3, 32, 32)
    aug = RandomAffine(degrees=10, translate_px=2, scale=(0.9, 1.1))
    one = aug(x, torch.Generator().manual_seed(3))
    two = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(one, two) and not torch.equal(one, aug(x, torch.Generator().manual_seed(4)))
    assert torch.allclose(RandomAffine()(x, torch.Generator().manual_seed(0)), x, atol=1e-5)


def test_integer_translation_is_an_exact_padded_crop():
    x = torch.rand(1, 1, 8, 8)
    aug = RandomAffine(translate_px=4, integer_translate=True)
    theta = torch.tensor([[[1.0, 0.0, 2 * 2 / 8], [0.0, 1.0, 0.0]]])  # read 2 px to the right
    shifted = aug.warp(x, theta)
    assert torch.equal(shifted[..., :, :6], x[..., :, 2:]) and torch.all(shifted[..., :, 6:] == 0)


def _write_cifar10(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 6) for i in range(1, 6)] + [("test_batch", 5)]:
        data = rng.integers(0, 255, size=(n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:  # the CIFAR distribution's own format
            pickle.dump({"data": data, "labels": list(rng.integers(0, 10, n))}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def test_cifar10_fixture_loads_through_the_real_loader(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    _write_cifar10(tmp_path)
    with pytest.raises(UserError, match="failed the md5 check"):
        CIFARDataModule(root=str(tmp_path), num_classes=10).setup("fit")
    # The fixture cannot carry the real archive's md5 sums; everything else is the real path.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    dm = CIFARDataModule(root=str(tmp_path), num_classes=10, val_size=4, batch_size=4)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (26, 4, 5)
    x, y = dm.train_set[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_cifar_reader_equals_torchvisions(tmp_path, monkeypatch):
    """The restricted reader gives torchvision's CIFAR10 images and labels exactly (NCHW here)."""
    import torchvision.datasets.cifar as tv_cifar

    _write_cifar10(tmp_path)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    dm = CIFARDataModule(root=str(tmp_path), num_classes=10, val_size=0, batch_size=4)
    dm.setup("fit")
    for train, ours in ((True, dm.train_set.base), (False, dm.test_set.base)):
        theirs = tv_cifar.CIFAR10(str(tmp_path), train=train, download=False)
        assert torch.equal(ours.tensors[0], torch.from_numpy(theirs.data).permute(0, 3, 1, 2))
        assert ours.tensors[1].tolist() == [int(t) for t in theirs.targets]


class _Payload:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_planted_cifar_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    _write_cifar10(tmp_path)
    marker = tmp_path / "payload_ran"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": _Payload(marker), "labels": [0]}, f)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    with pytest.raises(UserError, match=r"Refusing to load CIFAR-10 batch .*data_batch_3.*(posix|os)\.system"):
        CIFARDataModule(root=str(tmp_path), num_classes=10).setup("fit")
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Payload(marker)))  # the control: an unrestricted load runs it
    assert marker.exists()


def test_missing_cifar_says_layout_and_source(tmp_path):
    with pytest.raises(UserError) as err:
        CIFARDataModule(root=str(tmp_path / "nowhere"))
    assert "cifar-10-batches-py" in str(err.value) and "cs.toronto.edu" in str(err.value)


def _jpeg(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)


def test_tiny_imagenet_fixture_loads_through_the_real_loader(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids))
    for c, wnid in enumerate(wnids):
        for k in range(3):
            _jpeg(root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", 10 * c + k)
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t10\t10\nval_1.JPEG\tn01\t0\t0\t10\t10\n")
    for k in range(2):
        _jpeg(root / "val" / "images" / f"val_{k}.JPEG", 100 + k)
    dm = TinyImageNetDataModule(root=str(root), image_size=32, val_per_class=1, batch_size=2)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set), dm.num_classes) == (4, 2, 2, 2)
    assert [label for _, label in dm.test_set.items] == [1, 0]
    assert dm.train_set[0][0].shape == (3, 32, 32)


def test_imagefolder_fixture_and_missing_layout(tmp_path):
    for split, n in (("train", 4), ("val", 1)):
        for c in ("cat", "dog"):
            for k in range(n):
                _jpeg(tmp_path / split / c / f"{k}.png", k)
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=24, batch_size=2)
    dm.setup("fit")
    assert dm.classes == ["cat", "dog"] and len(dm.train_set) == 8 and len(dm.test_set) == 2
    with pytest.raises(UserError, match="train/<class>/<image>"):
        ImageFolderDataModule(root=str(tmp_path / "missing"))
