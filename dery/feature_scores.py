"""Label-aware training-free scores of a network's features on a probe batch: how well the
features of an untrained (stitched) network already separate the classes.

- `knn_accuracy`: leave-one-out k-NN accuracy with cosine similarity (each image is
  classified by the majority of its k most similar other images; a tie goes to the tied
  class met first among the neighbours, nearest first). Simple and, in recent studies of
  transferability metrics, hard to beat.
- `logme`: LogME (You et al., ICML 2021), the log marginal evidence per sample of a Bayesian
  linear regression from the features to each one-hot class target, maximised over the
  prior precision alpha and the noise precision beta by the paper's fixed-point iteration,
  averaged over classes. Computed in float64 from the SVD of the features. Where the
  features span every target (N <= rank), the evidence grows without bound as the noise
  vanishes; the residual is floored at 1e-12 of the target's norm there, so such features
  score high but finite. Keep N above the feature width for an informative LogME.
"""

from __future__ import annotations

import numpy as np
import torch

from dery.layout import pool


def pooled(h: torch.Tensor, layout: str) -> torch.Tensor:
    """(B, C) features of a block output as the head sees them (spatial / token mean)."""
    return pool(h, layout).reshape(h.shape[0], -1)


def _check(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if f.ndim != 2 or f.shape[0] != y.shape[0]:
        raise ValueError(f"features {f.shape} and labels {y.shape} must be (N, D) and (N,)")
    if f.shape[0] < 2:
        raise ValueError("a feature score needs at least 2 samples")
    return f, y


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy (cosine similarity) of `features` (N, D) for `labels` (N,)."""
    f, y = _check(features, labels)
    if not 1 <= k < len(y):
        raise ValueError(f"k={k} must be in [1, N - 1] = [1, {len(y) - 1}]")
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    unit = f / np.where(norms > 0, norms, 1.0)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)  # leave the image itself out
    neighbours = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    correct = 0
    for i, row in enumerate(neighbours):
        votes = y[row]
        classes, counts = np.unique(votes, return_counts=True)
        tied = set(classes[counts == counts.max()].tolist())
        pick = next(int(c) for c in votes if int(c) in tied)  # nearest neighbour among the tied classes
        correct += int(pick == y[i])
    return float(correct) / len(y)


def _evidence(sigma: np.ndarray, x2: np.ndarray, outside: np.ndarray, n: int, d: int, iters: int = 1000) -> np.ndarray:
    """Maximum log evidence / n of every target (row) from the squared singular values
    `sigma` (k,), the squared projections `x2` (targets, k) of the targets on the left
    singular vectors, and each target's squared norm outside their span (targets,). The
    fixed point of alpha, beta runs for all targets at once until each ratio settles."""
    alpha, beta = np.ones(len(x2)), np.ones(len(x2))
    floor = 1e-12 * (x2.sum(1) + outside)  # a residual this small is an exact fit

    def terms(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = t[:, None]
        gamma = (sigma / (sigma + t)).sum(1)  # effective number of parameters
        m2 = (sigma * x2 / (sigma + t) ** 2).sum(1)  # |m|^2 of the posterior mean
        res2 = (x2 * (t / (sigma + t)) ** 2).sum(1) + outside  # |F m - y|^2
        return gamma, m2, res2

    def _step(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        t = alpha / beta
        gamma, m2, res2 = terms(t)
        # floors for features that fit a target exactly (N <= rank: res2 -> 0, gamma -> N)
        alpha = np.clip(np.maximum(gamma, 1e-12) / np.maximum(m2, 1e-300), 1e-150, 1e150)  # 1e150: "infinite"
        beta = np.clip(np.maximum(n - gamma, 1e-12) / np.maximum(res2, floor), 1e-150, 1e150)
        return alpha, beta, bool(np.all(np.abs(alpha / beta - t) <= 1e-10 * t))

    for _ in range(iters):
        alpha, beta, done = _step(alpha, beta)
        if done:
            break
    _, m2, res2 = terms(alpha / beta)
    log_det = np.log(alpha[:, None] + beta[:, None] * sigma).sum(1) + (d - len(sigma)) * np.log(alpha)  # log|A|
    evidence = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - log_det / 2
        - beta / 2 * res2
        - alpha / 2 * m2
        - n / 2 * np.log(2 * np.pi)
    )
    return evidence / n


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of `features` (N, D) for class `labels` (N,): the mean over classes of the
    maximum log evidence per sample of a linear model from the features to the one-hot target."""
    f, y = _check(features, labels)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > 1e-10 * max(s.max(initial=0.0), 1e-300)
    u, sigma = u[:, keep], s[keep] ** 2
    targets = (y[None, :] == np.unique(y)[:, None]).astype(np.float64)  # (classes, N) one-hot rows
    x = targets @ u
    outside = np.maximum((targets**2).sum(1) - (x**2).sum(1), 0.0)
    return float(np.mean(_evidence(sigma, x**2, outside, n, d)))
