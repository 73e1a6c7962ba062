"""The generated dSprites-like data: deterministic, disjoint splits, images that follow
their factors."""

from __future__ import annotations

import pytest
import torch

from kf.shapes import FACTORS, ShapesDataModule, factor_grid, render
from tasks.errors import UserError


def one(**values) -> torch.Tensor:
    base = {"shape": 0, "scale": 0, "rotation": 0, "x": 3, "y": 3, "color": 0}
    base.update(values)
    return render(torch.tensor([[base[k] for k in FACTORS]]), FACTORS)[0]


def test_same_seed_same_images_and_disjoint_splits():
    a = ShapesDataModule(num_train=64, num_val=16, num_test=32, data_seed=3)
    b = ShapesDataModule(num_train=64, num_val=16, num_test=32, data_seed=3)
    a.setup(), b.setup()
    assert torch.equal(a.train_set.tensors[0], b.train_set.tensors[0])
    assert torch.equal(a.test_set.tensors[1], b.test_set.tensors[1])
    rows = lambda s: {tuple(r) for r in s.tensors[1].tolist()}  # noqa: E731
    assert not rows(a.train_set) & rows(a.test_set) and not rows(a.val_set) & rows(a.test_set)
    x, y = a.train_set[0]
    assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1 and y.shape == (6,)
    assert a.factor_sizes == FACTORS and a.factor_names == list(FACTORS)


def test_images_follow_their_factors():
    area = lambda img: float(img.amax(0).sum())  # noqa: E731
    assert area(one(scale=5)) > 2 * area(one(scale=0))
    assert one(color=1)[1].sum() > one(color=1)[0].sum()  # green sprite
    left, right = one(x=0), one(x=7)
    columns = torch.arange(32).float()
    centre = lambda img: float((img.amax(0).sum(0) * columns).sum() / img.amax(0).sum())  # noqa: E731
    assert centre(right) - centre(left) > 8
    assert not torch.allclose(one(shape=0), one(shape=1)) and not torch.allclose(
        one(rotation=0, scale=5), one(rotation=2, scale=5)
    )
    assert torch.allclose(one(shape=0, rotation=0), render(torch.tensor([[0, 0, 0, 3, 3, 0]]), FACTORS)[0])


def test_grid_and_bad_requests():
    assert len(factor_grid({"a": 2, "b": 3})) == 6
    with pytest.raises(UserError, match="factor grid has"):
        ShapesDataModule(num_train=30000)
    with pytest.raises(UserError, match="must hold"):
        ShapesDataModule(factors={"shape": 3, "x": 4})
