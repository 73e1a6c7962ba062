"""The label budget (tasks.data.labels): an exact stratified draw per seed from the training
pool, disjoint from the test set, dropped or masked, recorded in the run's summary; and a run
that trains on exactly the drawn images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.data import fashion
from tasks.data.fashion import FashionMNISTDataModule
from tasks.data.labels import UNLABELLED, LabelBudget, draw_labelled
from tasks.errors import UserError
from tests.conftest import TINY, run_in_process
from tests.tasks.test_fashion import write_idx


def test_draw_is_exactly_stratified_and_fixed_by_its_seed():
    labels = np.repeat(np.arange(10), [50, 40, 30, 60, 50, 45, 35, 55, 20, 15])
    first = draw_labelled(labels, 10, seed=3)
    assert np.bincount(labels[first]).tolist() == [10] * 10 and len(np.unique(first)) == 100
    assert np.array_equal(first, draw_labelled(labels, 10, seed=3))  # the same draw for the same seed
    assert not np.array_equal(first, draw_labelled(labels, 10, seed=4))  # a new seed draws anew
    assert np.array_equal(first, np.sort(first))


def test_a_class_with_too_few_images_is_named():
    with pytest.raises(UserError, match=r"labels_per_class=5.*class 2: 3"):
        draw_labelled(np.array([0] * 9 + [1] * 9 + [2] * 3), 5, seed=0)
    with pytest.raises(UserError, match="unlabelled='keep'"):
        LabelBudget(2, 0, "keep")


def test_drop_keeps_the_labelled_and_mask_marks_the_rest():
    index, labels = torch.arange(100, 160), torch.arange(60) % 3
    kept, kept_labels, used = LabelBudget(4, 7, "drop").apply(index, labels)
    assert torch.bincount(kept_labels).tolist() == [4, 4, 4]
    assert used == {"count": 12, "per_class": 4, "seed": 7, "pool": 60, "unlabelled": "drop"}
    pool, masked, _ = LabelBudget(4, 7, "mask").apply(index, labels)
    assert torch.equal(pool, index) and int((masked != UNLABELLED).sum()) == 12
    assert torch.equal(index[masked != UNLABELLED], kept)  # the same 12 images either way
    assert torch.equal(masked[masked != UNLABELLED], kept_labels)
    assert LabelBudget(None).apply(index, labels) == (index, labels, None)
    pool, none, used = LabelBudget(0, 7, "mask").apply(index, labels)  # the images without any label
    assert torch.equal(pool, index) and bool((none == UNLABELLED).all()) and used["count"] == 0
    with pytest.raises(UserError, match="leaves no image"):
        LabelBudget(0, 7, "drop").apply(index, labels)


@pytest.fixture
def fashion_files(monkeypatch, tmp_path):
    """Train images hold their index (0..199), test images 250 + their index: a kept image
    tells where it came from."""
    monkeypatch.setattr(
        fashion, "SPLITS", {k: (a, b, {"train": 200, "test": 5}[k]) for k, (a, b, _) in fashion.SPLITS.items()}
    )
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "no-debian")
    for split, n, offset in (("train", 200, 0), ("test", 5, 250)):
        images_name, labels_name, _ = fashion.SPLITS[split]
        write_idx(tmp_path / images_name, (np.arange(n)[:, None, None] + offset) * np.ones((1, 28, 28)), False)
        write_idx(tmp_path / labels_name, np.arange(n) % 10, False)
    return tmp_path


def source_index(dataset) -> list[int]:
    """Which raw image each item is (the fixture's images hold their own index)."""
    return [round(float(dataset[i][0][0, 0, 0]) * 255) for i in range(len(dataset))]


def test_fashion_pool_gives_its_labels_only_to_the_draw(fashion_files):
    common = dict(root=str(fashion_files), image_size=28, val_size=50, batch_size=8)
    full = FashionMNISTDataModule(**common)
    drop = FashionMNISTDataModule(**common, labels_per_class=3, label_seed=1)
    mask = FashionMNISTDataModule(**common, labels_per_class=3, label_seed=1, unlabelled="mask")
    for data in (full, drop, mask):
        data.setup("fit")
    pool, kept = source_index(full.train_set), source_index(drop.train_set)
    assert len(kept) == 30 and set(kept) <= set(pool) and max(kept) < 200  # from the pool, none from test
    assert not set(kept) & set(source_index(full.val_set))
    assert torch.bincount(drop.train_set.labels).tolist() == [3] * 10
    assert [pool[i] for i in np.flatnonzero(mask.train_set.labels.numpy() >= 0)] == kept
    assert source_index(mask.train_set) == pool  # mask keeps every image of the pool
    assert drop.labels_used == {"count": 30, "per_class": 3, "seed": 1, "pool": 150, "unlabelled": "drop"}
    assert torch.equal(drop.test_set.labels, full.test_set.labels) and full.labels_used is None
    again = FashionMNISTDataModule(**common, labels_per_class=3, label_seed=1)
    again.setup("fit")
    assert source_index(again.train_set) == kept


def test_a_run_trains_on_the_drawn_labels_only_and_says_so(tmp_path):
    """Digits, 2 labels per class of seed 5: 20 images in batches of 10 are 2 optimiser steps
    an epoch, and the summary records the draw."""
    overrides = ["experiment=repfusion_digits_finetune", "model.backbone.name=test_resnet", "data.batch_size=10"]
    overrides += ["data.labels_per_class=2", "seed=5", *TINY]
    overrides += ["trainer.max_epochs=3", "trainer.limit_train_batches=null"]
    summary = run_in_process(overrides, tmp_path)
    assert summary["labels_used"] == {"count": 20, "per_class": 2, "seed": 5, "pool": 1257, "unlabelled": "drop"}
    assert summary["global_step"] == 6
