"""Fashion-MNIST: the IDX reader and the DataModule on tiny fixtures the tests write, the
search order of the three places, the errors, and (when the Debian package is installed)
the real files: counts, balance, known labels and an image checksum, and the torchvision
layout giving the same tensors as the Debian one."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct

import numpy as np
import pytest
import torch

from tasks.data import fashion
from tasks.data.fashion import FashionMNISTDataModule, locate_files, stratified_split
from tasks.data.idx import read_idx
from tasks.errors import UserError

REAL = fashion.DEBIAN_DIR
HAS_REAL = all((REAL / f"{n}.gz").is_file() for s in fashion.SPLITS.values() for n in s[:2])
needs_real = pytest.mark.skipif(not HAS_REAL, reason=f"Fashion-MNIST not installed in {REAL} (make fashion)")


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def tiny_fashion(folder, n_train=40, n_test=20, compress=True, offset=0):
    """Four IDX files with 10 balanced classes; every image is filled with its index + offset."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("test", n_test)):
        images_name, labels_name, _ = fashion.SPLITS[split]
        images = (np.arange(n)[:, None, None] + offset) * np.ones((1, 28, 28), dtype=np.int64)
        write_idx(folder / f"{images_name}{suffix}", images % 256, compress)
        write_idx(folder / f"{labels_name}{suffix}", np.arange(n) % 10, compress)
    return folder


@pytest.fixture
def tiny_counts(monkeypatch, tmp_path):
    monkeypatch.setattr(
        fashion, "SPLITS", {k: (a, b, {"train": 40, "test": 20}[k]) for k, (a, b, _) in fashion.SPLITS.items()}
    )
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "no-debian")


def test_idx_reader_round_trips_plain_and_gzip(tmp_path):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    for compress in (False, True):
        path = tmp_path / ("a.gz" if compress else "a")
        write_idx(path, array, compress)
        assert np.array_equal(read_idx(path, expected_shape=(2, 3, 4)), array)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "bad magic number empty"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x02ab", "bad magic number"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated inside its IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", r"holds 3 data bytes where its header \(5,\) promises 5"),
    ],
)
def test_idx_reader_names_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "labels"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_idx_reader_checks_the_expected_shape_and_gzip(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 28, 28)), compress=False)
    with pytest.raises(UserError, match=r"has shape \(3, 28, 28\), expected \(60000, 28, 28\)"):
        read_idx(tmp_path / "x", expected_shape=(60000, 28, 28))
    (tmp_path / "y.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="not a readable IDX file"):
        read_idx(tmp_path / "y.gz")


def test_module_reads_fixtures_with_official_test_split_and_grey_to_rgb(tmp_path, tiny_counts):
    root = tiny_fashion(tmp_path / "data", compress=False)
    dm = FashionMNISTDataModule(root=str(root), image_size=28, val_size=10, batch_size=4)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 20)
    x, y = dm.test_set[7]
    assert x.shape == (3, 28, 28) and torch.all(x == 7 / 255) and int(y) == 7
    seen = sorted(int(dm.train_set.images[i, 0, 0, 0] * 255 + 0.5) for i in range(30))
    seen += sorted(int(dm.val_set.images[i, 0, 0, 0] * 255 + 0.5) for i in range(10))
    assert sorted(seen) == list(range(40))  # train and val partition the official train split
    grey = FashionMNISTDataModule(root=str(root), image_size=32, in_chans=1, val_size=10)
    grey.setup()
    assert grey.test_set[0][0].shape == (1, 32, 32) and grey.mean == (0.2854,)
    assert FashionMNISTDataModule(root=str(root), val_size=10).mean == (0.2854,) * 3


def test_exports_name_the_official_classes_in_label_order(tmp_path, tiny_counts):
    from tasks.io.cards import data_config

    dm = FashionMNISTDataModule(root=str(tiny_fashion(tmp_path / "data", compress=False)), val_size=10)
    names = data_config(dm)["label_names"]
    assert names[0] == "T-shirt/top" and names[8] == "Bag" and names[9] == "Ankle boot" and len(names) == 10


def test_val_split_is_stratified_fixed_and_independent_of_the_subset():
    labels = np.repeat(np.arange(10), 100)
    train, val = stratified_split(labels, 200, None, seed=0)
    assert np.array_equal(np.bincount(labels[val]), [20] * 10) and not set(train) & set(val)
    sub_train, sub_val = stratified_split(labels, 200, 50, seed=0)
    assert np.array_equal(sub_val, val) and np.array_equal(np.bincount(labels[sub_train]), [5] * 10)
    assert set(sub_train) <= set(train)
    again, _ = stratified_split(labels, 200, 50, seed=0)
    other, _ = stratified_split(labels, 200, 50, seed=1)
    assert np.array_equal(again, sub_train) and not np.array_equal(other, sub_train)


def test_search_order_root_then_torchvision_layout_then_debian(tmp_path, monkeypatch, tiny_counts):
    debian = tiny_fashion(tmp_path / "debian", offset=2)
    monkeypatch.setattr(fashion, "DEBIAN_DIR", debian)
    root = tmp_path / "root"
    tiny_fashion(root / "FashionMNIST" / "raw", compress=False, offset=1)
    assert locate_files(root)["t10k-labels-idx1-ubyte"].parent == root / "FashionMNIST" / "raw"
    tiny_fashion(root)
    assert locate_files(root)["t10k-labels-idx1-ubyte"].parent == root
    assert locate_files(tmp_path / "empty")["t10k-labels-idx1-ubyte"].parent == debian
    assert locate_files(None)["t10k-labels-idx1-ubyte"].parent == debian


def test_missing_data_names_the_three_ways_to_get_it(tmp_path, tiny_counts):
    with pytest.raises(UserError) as err:
        FashionMNISTDataModule(root=str(tmp_path / "nowhere"), val_size=10)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "fashion-mnist.s3-website" in message
    assert "data.root=" in message and str(tmp_path / "nowhere" / "FashionMNIST" / "raw") in message


def test_bad_options_are_named(tmp_path, tiny_counts):
    root = tiny_fashion(tmp_path / "d")
    for kwargs, key in (
        ({"in_chans": 2}, "data.in_chans"),
        ({"val_size": -1}, "data.val_size"),
        ({"train_subset": 3}, "data.train_subset"),
    ):
        with pytest.raises(UserError, match=key):
            FashionMNISTDataModule(root=str(root), **{"val_size": 10, **kwargs})


@needs_real
def test_real_files_counts_balance_known_labels_and_checksum():
    files = locate_files(None)
    x_train, y_train = fashion.load_split(files, "train")
    x_test, y_test = fashion.load_split(files, "test")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert np.array_equal(np.bincount(y_train), [6000] * 10) and np.array_equal(np.bincount(y_test), [1000] * 10)
    assert list(y_train[:10]) == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5] and list(y_test[:5]) == [9, 2, 1, 1, 6]
    assert (
        hashlib.sha256(x_train[0].tobytes()).hexdigest()
        == "5bd44e331a6d6998daf675700cd0c13dcd7af8ab954b7585124124da61459e7b"
    )
    assert int(x_train[0].sum()) == 76247


@needs_real
def test_torchvision_layout_gives_the_same_tensors_as_debian(tmp_path):
    from torchvision.datasets import FashionMNIST

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in REAL.glob("*.gz"):  # torchvision reads the decompressed files
        with gzip.open(path) as src, open(raw / path.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    ours = FashionMNISTDataModule(root=str(tmp_path), val_size=5000, train_subset=1000)
    debian = FashionMNISTDataModule(root=None, val_size=5000, train_subset=1000)
    assert ours.source == raw and debian.source == REAL
    ours.setup(), debian.setup()
    for split in ("train_set", "val_set", "test_set"):
        a, b = getattr(ours, split), getattr(debian, split)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    reference = FashionMNIST(str(tmp_path), train=False, download=False)
    assert torch.equal(reference.targets, debian.test_set.labels)
    native = FashionMNISTDataModule(root=None, image_size=28, val_size=5000)
    native.setup()
    assert torch.equal((native.test_set.images[:, 0] * 255).round().to(torch.uint8), reference.data)
