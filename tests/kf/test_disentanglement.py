"""MIG and DCI on hand-made codes whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from kf.disentanglement import dci, dci_from_importance, mig
from kf.shapes import factor_grid
from tasks.errors import UserError


def grid(sizes=(3, 4, 5)) -> np.ndarray:
    """Every combination of three factors once: empirically independent factors."""
    return factor_grid({f"f{i}": n for i, n in enumerate(sizes)}).numpy()


def test_perfect_code_scores_one():
    factors = np.repeat(grid(), 4, axis=0)
    codes = factors.astype(float) * np.array([1.0, -2.0, 0.5]) + 3.0  # one code per factor, any monotone scale
    assert mig(codes, factors) == pytest.approx(1.0, abs=1e-12)
    scores = dci(codes, factors)
    assert scores["disentanglement"] == pytest.approx(1.0, abs=1e-6)
    assert scores["completeness"] == pytest.approx(1.0, abs=1e-6)
    assert scores["informativeness"] == pytest.approx(1.0)


def test_permuted_perfect_code_still_scores_one_and_duplicate_code_has_no_gap():
    factors = grid()
    codes = factors[:, [2, 0, 1]].astype(float)
    assert mig(codes, factors) == pytest.approx(1.0, abs=1e-12)
    doubled = np.concatenate([codes, codes], 1)  # two codes carry each factor: the MIG gap is 0
    assert mig(doubled, factors) == pytest.approx(0.0, abs=1e-12)


def test_random_code_scores_near_zero():
    rng = np.random.default_rng(0)
    factors = np.repeat(grid(), 10, axis=0)
    codes = rng.normal(size=(len(factors), 3))
    assert mig(codes, factors) < 0.05
    scores = dci(codes, factors)
    assert scores["disentanglement"] < 0.2
    assert scores["informativeness"] < 0.45  # chance is 1/3, 1/4, 1/5


def test_entangled_code_one_dimension_for_all_factors():
    factors = grid((2, 2, 2))
    codes = np.stack([factors @ np.array([1.0, 2.0, 4.0]), np.zeros(len(factors))], 1)  # all factors in code 0
    matrix = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    d, c = dci_from_importance(matrix)
    assert d == pytest.approx(0.0, abs=1e-6)  # code 0 serves every factor equally
    assert c == pytest.approx(1.0, abs=1e-6)  # every factor lives in one code
    assert mig(codes, factors) < 1.0


def test_dci_from_importance_by_hand():
    # Code 0 -> factor 0 only; code 1 split evenly between factors 0 and 1 (entropy 1 in base 2).
    matrix = np.array([[2.0, 0.0], [1.0, 1.0]])
    d, c = dci_from_importance(matrix)
    # rho = (2/4, 2/4); disentanglement = 0.5 * 1 + 0.5 * 0 = 0.5.
    assert d == pytest.approx(0.5, abs=1e-6)
    # factor 0: importances (2, 1) -> 1 - H2(2/3, 1/3) = 0.0817042; factor 1: (0, 1) -> 1; weights (3/4, 1/4).
    assert c == pytest.approx(0.75 * (1 - 0.9182958340544896) + 0.25, abs=1e-6)


def test_guards():
    with pytest.raises(UserError, match="two dimensions"):
        mig(np.zeros((10, 1)), np.zeros((10, 2), dtype=int))
    with pytest.raises(UserError, match="two ground-truth factors"):
        dci(np.zeros((10, 3)), np.zeros((10, 1), dtype=int))


def test_lasso_importance_on_a_perfect_code():
    factors = np.repeat(grid(), 4, axis=0)
    scores = dci(factors.astype(float), factors, method="lasso")
    assert scores["disentanglement"] > 0.99 and scores["informativeness"] > 0.95
