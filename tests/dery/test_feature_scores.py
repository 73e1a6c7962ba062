"""k-NN and LogME on small hand-made feature sets: golden values (LogME against the
reference implementation thuml/LogME), and a planted case where separating features must
score above features that do not separate the classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dery.feature_scores import knn_accuracy, logme
from dery.proxies import feature_score

TALL = np.array(
    [
        [2.1, -0.1, 0.6], [2.1, -0.5, 0.4], [3.3, 0.9, -0.7], [0.7, -0.6, 0.0],
        [-1.0, 1.8, -0.2], [0.5, 2.2, 0.4], [-0.7, 1.9, 0.8], [1.5, 0.7, 1.5],
        [-0.4, -1.2, 3.7], [-0.5, 0.3, 1.7], [1.6, 1.3, 2.6], [-2.2, 0.1, 2.7],
    ]
)  # fmt: skip
TALL_Y = np.repeat(np.arange(3), 4)
WIDE = np.array(
    [
        [1.0, 0.2, -0.3, 0.5, 0.0, 0.1, -0.2, 0.4],
        [0.8, -0.1, 0.1, 0.6, 0.3, -0.2, 0.0, 0.2],
        [0.9, 0.4, -0.5, 0.2, -0.1, 0.3, 0.1, 0.5],
        [-0.6, 1.1, 0.3, -0.4, 0.2, 0.0, 0.5, -0.1],
        [-0.2, 0.9, 0.6, -0.3, -0.4, 0.2, 0.3, 0.0],
        [-0.5, 1.3, 0.1, 0.1, 0.1, -0.3, 0.6, -0.2],
    ]
)  # fmt: skip
WIDE_Y = np.array([0, 0, 0, 1, 1, 1])


def test_logme_matches_the_reference_implementation():
    # thuml/LogME @ 56551ca, LogME()._fit_icml (an eigendecomposition of F^T F) with its
    # epsilon (1e-5) set to 0 and its stopping rule tightened to 1e-13, so that both compute
    # the exact maximum evidence: tall (N > D) and wide (N < D) features
    assert logme(TALL, TALL_Y) == pytest.approx(-0.6429682319330531, abs=1e-12)
    # N <= D: the features fit every target exactly and the evidence creeps up as the noise
    # vanishes (both fixed points still move after 1e5 steps): agreement to 1e-5 only
    assert logme(WIDE, WIDE_Y) == pytest.approx(-0.3172433234482258, abs=1e-5)
    # the reference as released (epsilon 1e-5, stops at a 1 % change): within its tolerance
    assert logme(TALL, TALL_Y) == pytest.approx(-0.6429876487954027, abs=1e-4)
    assert logme(WIDE, WIDE_Y) == pytest.approx(-0.3216085207089935, abs=1e-2)


def test_logme_is_the_maximum_of_the_gaussian_marginal_likelihood():
    # independent of the fixed point: y ~ N(0, I / beta + F F^T / alpha) is the marginal of
    # the Bayesian linear model; its log density maximised over (alpha, beta) by Nelder-Mead,
    # per sample, averaged over the one-hot class targets
    from scipy.optimize import minimize
    from scipy.stats import multivariate_normal

    def best(target: np.ndarray) -> float:
        def neg(log_ab):
            alpha, beta = np.exp(log_ab)
            cov = np.eye(len(target)) / beta + TALL @ TALL.T / alpha
            return -multivariate_normal(np.zeros(len(target)), cov).logpdf(target)

        return -minimize(neg, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12}).fun

    direct = np.mean([best((TALL_Y == c).astype(float)) for c in range(3)]) / len(TALL_Y)
    assert logme(TALL, TALL_Y) == pytest.approx(direct, abs=1e-8)


def test_knn_golden_values_and_tie_break():
    # TALL, from the cosine similarities: rows 7 (class 1) and 10 (class 2) are each other's
    # nearest neighbour, wrong at k=1; at k=3 row 7 sees classes (2, 0, 0) -> 0 and row 10 a
    # three-way tie (1, 2, 0) -> 1, the nearest: both wrong, the other ten right
    assert knn_accuracy(TALL, TALL_Y, k=1) == pytest.approx(10 / 12)
    assert knn_accuracy(TALL, TALL_Y, k=3) == pytest.approx(10 / 12)
    assert knn_accuracy(WIDE, WIDE_Y, k=1) == 1.0
    # a tie between two classes goes to the class of the nearer neighbour
    f = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, -0.3], [0.0, 1.0]])
    y = np.array([0, 1, 0, 1])
    # row 0: neighbours by cosine are 1 (class 1), 2 (class 0): a 1-1 tie -> class 1, wrong
    # row 1: 0 (class 0), 2 (class 0) -> 0, wrong; row 2: 0, 1 -> tie -> class 0, right;
    # row 3: 1 (class 1), 0 (class 0) -> tie -> class 1, right
    assert knn_accuracy(f, y, k=2) == 0.5


def test_planted_separating_features_score_above_noise():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 20)
    noise = rng.standard_normal((80, 16))
    separating = noise + 3.0 * np.eye(4)[y] @ rng.standard_normal((4, 16))
    assert knn_accuracy(separating, y) > 0.9 > 0.5 > knn_accuracy(noise, y)
    assert logme(separating, y) > logme(noise, y) + 0.1
    # through the search's entry point, from torch tensors
    t, labels = torch.from_numpy(separating).float(), torch.from_numpy(y)
    assert feature_score("logme", t, labels) == pytest.approx(logme(t.double().numpy(), y), abs=1e-12)
    assert feature_score("knn", t, labels, knn_k=5) == knn_accuracy(separating, y, 5)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="k=12 must be in"):
        knn_accuracy(TALL, TALL_Y, k=12)
    with pytest.raises(ValueError, match="must be \\(N, D\\) and \\(N,\\)"):
        logme(TALL, TALL_Y[:5])
    with pytest.raises(ValueError, match="not a feature score"):
        feature_score("naswot", TALL, TALL_Y)
