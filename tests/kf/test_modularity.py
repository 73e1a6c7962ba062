"""Leakage measures on codes with a known answer: a planted leak (h_0 also carries task 2)
is found by the cross-probe matrix and by the per-TSN importances; clean codes show none."""

from __future__ import annotations

import numpy as np
import pytest

from kf.modularity import block_importance, cross_probe_matrix, held_out_split, modularity_metrics
from tasks.errors import UserError

N, K, D = 600, 3, 6
NAMES = ["a", "b", "c"]


def codes(plant: bool, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Three independent binary tasks; h_i = noise with task i's sign (+-2) in dimension 0;
    `plant`: h_0 also carries task 2's sign in dimension 1. z is noise."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, size=(N, K))
    tsn = []
    for i in range(K):
        h = rng.normal(size=(N, D))
        h[:, 0] += 2 * (2 * targets[:, i] - 1)
        if plant and i == 0:
            h[:, 1] += 2 * (2 * targets[:, 2] - 1)
        tsn.append(h)
    return tsn, rng.normal(size=(N, D)), targets


def test_held_out_halves_are_disjoint_stratified_and_seeded():
    targets = np.repeat(np.array([[0, 1], [1, 0], [1, 1]]), [10, 20, 30], axis=0)
    fit, score = held_out_split(targets, seed=3)
    assert len(np.intersect1d(fit, score)) == 0 and len(fit) + len(score) == 60
    # half of every joint class
    assert [int((targets[fit, 0] == 0).sum()), int((targets[fit, 1] == 0).sum())] == [5, 10]
    again = held_out_split(targets, seed=3)
    assert np.array_equal(fit, again[0]) and np.array_equal(score, again[1])
    capped = held_out_split(targets, seed=3, max_samples=20)
    assert len(capped[0]) + len(capped[1]) == 20


def test_cross_probe_finds_the_planted_leak_and_nothing_else():
    clean_codes, _, targets = codes(plant=False)
    clean = cross_probe_matrix(clean_codes, targets, NAMES)
    leaky_codes, _, targets = codes(plant=True)
    leaky = cross_probe_matrix(leaky_codes, targets, NAMES)
    off = ~np.eye(K, dtype=bool)
    assert np.diag(clean).min() > 0.93 and np.diag(leaky).min() > 0.93  # Phi(2) = 0.977: every h_i knows its task
    assert clean[off].max() < 0.6  # chance is 0.5
    assert leaky[0, 2] > 0.93  # the leak: h_0 predicts task 2
    off[0, 2] = False
    assert leaky[off].max() < 0.6  # ... and only there


def test_per_tsn_importance_moves_to_the_leaking_tsn():
    clean_codes, z, targets = codes(plant=False)
    leaky_codes, z, targets = codes(plant=True)
    clean = block_importance([*clean_codes, z], targets, NAMES)
    leaky = block_importance([*leaky_codes, z], targets, NAMES)
    share = lambda m: m / m.sum(0)  # noqa: E731  (importance share of every block in each task)
    assert share(clean)[0, 2] < 0.05 and share(leaky)[0, 2] > 0.3
    assert np.all(np.diag(share(clean)) > 0.8)


def test_modularity_metrics_summarise_the_leak():
    clean, _ = modularity_metrics(*codes(plant=False), num_classes=[2] * K, names=NAMES)
    leaky, matrices = modularity_metrics(*codes(plant=True), num_classes=[2] * K, names=NAMES)
    assert clean["test/cross_probe/other_max"] < 0.6 < 0.93 < leaky["test/cross_probe/other_max"]
    assert clean["test/dci_tsn/leak_share"] < 0.08 and leaky["test/dci_tsn/leak_share"] > 0.15
    assert leaky["test/dci_tsn/disentanglement"] < clean["test/dci_tsn/disentanglement"] - 0.15
    assert clean["test/cross_probe/chance"] == 0.5 and clean["test/cross_probe/ckn_mean"] < 0.6  # z is noise
    assert matrices["rows"] == [*NAMES, "ckn"] and np.array(matrices["cross_probe"]).shape == (K + 1, K)


def test_too_few_samples_of_a_class_is_a_user_error():
    tsn, z, targets = codes(plant=False)
    targets = targets[:40].copy()
    targets[:, 1] = 0
    targets[0, 1] = 1  # one positive sample: it cannot be in both halves
    with pytest.raises(UserError, match="task 'b'"):
        cross_probe_matrix([c[:40] for c in tsn], targets, NAMES)
