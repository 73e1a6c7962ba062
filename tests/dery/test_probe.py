"""Probe images: class-stratified (a class-sorted split still gives every class its share,
in every batch), read without augmentation (an image folder's train split through the
evaluation transform), and fingerprinted by the images actually chosen."""

from __future__ import annotations

from collections import Counter

import torch
from omegaconf import OmegaConf
from PIL import Image

from dery.probe import Probe, stratified_order

DIGITS = OmegaConf.create(
    {
        "_target_": "tasks.data.DigitsDataModule",
        "batch_size": 64,
        "batch_augment": {"_target_": "tasks.data.RandomAffine", "degrees": 10, "translate_px": 2},
    }
)


def test_stratified_order_takes_the_classes_in_turn():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)  # class-sorted, as ImageNet's val
    order = stratified_order(labels, 7, seed=0)
    assert [int(labels[i]) for i in order] == [0, 1, 2, 0, 1, 0, 1]
    assert len(set(order)) == 7 and stratified_order(labels, 7, seed=0) == order
    everything = [stratified_order(labels, 10, seed=s) for s in (0, 1)]
    assert sorted(everything[0]) == sorted(everything[1]) == list(range(10)) and everything[0] != everything[1]


def test_digits_probe_batches_are_balanced_and_not_augmented():
    probe = Probe(DIGITS, "train", 160, 32)
    for b, x in enumerate(probe.batches()):
        classes = Counter(int(probe.labels[i]) for i in probe.indices[32 * b : 32 * (b + 1)])
        assert sorted(classes) == list(range(10)) and max(classes.values()) - min(classes.values()) <= 1
        images = probe.datamodule.train_set.tensors[0][probe.indices[32 * b : 32 * (b + 1)]]
        assert torch.equal(x, probe.datamodule.normalize(images))  # the stored images, normalised, nothing else
    assert b == 4


def _image_folder(root, classes=3, per_class=4):
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = (torch.rand(40, 56, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_image_folder_probe_uses_the_evaluation_transform(tmp_path):
    _image_folder(tmp_path)
    cfg = OmegaConf.create(
        {
            "_target_": "tasks.data.ImageFolderDataModule",
            "root": str(tmp_path),
            "image_size": 16,
            "num_workers": 0,
            "batch_size": 4,
        }
    )
    probe = Probe(cfg, "train", 6, 6)
    first, second = next(probe.batches()), next(probe.batches())
    assert torch.equal(first, second)  # no random crop or flip
    assert [int(probe.labels[i]) for i in probe.indices] == [0, 1, 2, 0, 1, 2]
    path, _ = probe.dataset.items[probe.indices[0]]
    with Image.open(path) as img:
        expected = probe.datamodule.val_set.transform(img.convert("RGB"))
    assert torch.equal(first[0], probe.datamodule.normalize(expected[None]).squeeze(0))
    # the data module's own train split keeps its augmentation
    assert probe.datamodule.train_set.transform is not probe.dataset.transform


def test_fingerprint_follows_the_chosen_images():
    a, b = Probe(DIGITS, "train", 50, 25), Probe(DIGITS, "train", 50, 25)
    assert a.fingerprint() == b.fingerprint()
    assert Probe(DIGITS, "train", 50, 25, seed=1).fingerprint() != a.fingerprint()
    assert Probe(DIGITS, "train", 49, 25).fingerprint() != a.fingerprint()
