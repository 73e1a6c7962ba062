"""Leakage and modularity of factor networks, measured on held-out codes: does h_i (TSN_i's
code) carry the information of other tasks j != i?

- Cross-probe matrix P[r, j]: balanced accuracy of a linear probe from representation r
  (every h_i, and the CKN's z) to task j, fitted on one half of the codes and scored on the
  other half. A modular factorisation has a high diagonal and other tasks near chance.
- Per-TSN importances R[r, j] (DCI-style, Eastwood & Williams 2018): one lasso per task class
  on all codes side by side (z, h_1, ..., h_K, standardised); R[r, j] sums the absolute
  weights of block r. DCI disentanglement and completeness of the TSN rows, and the share of
  task j's importance on its own TSN, on the other TSNs (leakage) and on z.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kf.disentanglement import dci_from_importance
from tasks.errors import UserError


def held_out_split(targets: np.ndarray, seed: int = 0, max_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fit, score) index halves of the samples (at most `max_samples` of them), stratified by
    the joint task classes when every combination occurs at least twice."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(targets))
    if max_samples and len(order) > max_samples:
        order = order[:max_samples]
    _, joint = np.unique(targets[order], axis=0, return_inverse=True)
    joint = joint.reshape(-1)
    fit, score = [], []
    if np.bincount(joint).min() >= 2:
        for value in np.unique(joint):
            members = order[joint == value]
            cut = len(members) // 2
            fit.extend(members[:cut])
            score.extend(members[cut:])
    else:
        cut = len(order) // 2
        fit, score = list(order[:cut]), list(order[cut:])
    return np.sort(np.array(fit, dtype=np.int64)), np.sort(np.array(score, dtype=np.int64))


def _check_classes(targets: np.ndarray, fit: np.ndarray, score: np.ndarray, names: Sequence[str]) -> None:
    for j, name in enumerate(names):
        classes = np.unique(targets[:, j])
        missing = [c for c in classes if (targets[fit, j] == c).sum() == 0 or (targets[score, j] == c).sum() == 0]
        if len(classes) < 2 or missing:
            raise UserError(
                f"The leakage probes need every class of task '{name}' in both held-out halves of the "
                f"test codes (classes {classes.tolist()}, missing in one half: {missing}). Use a larger "
                "test split (or more test batches), or set model.leakage=false."
            )


def _standardise(fit_x: np.ndarray, score_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = fit_x.mean(0), fit_x.std(0) + 1e-8
    return (fit_x - mean) / std, (score_x - mean) / std


def probe_balanced_accuracy(
    fit_x: np.ndarray, fit_y: np.ndarray, score_x: np.ndarray, score_y: np.ndarray, seed: int = 0
) -> float:
    """Balanced accuracy on (score_x, score_y) of a class-balanced logistic regression fitted
    on standardised (fit_x, fit_y)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    fit_x, score_x = _standardise(fit_x, score_x)
    probe = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed).fit(fit_x, fit_y)
    return float(balanced_accuracy_score(score_y, probe.predict(score_x)))


def cross_probe_matrix(
    codes: Sequence[np.ndarray],
    targets: np.ndarray,
    names: Sequence[str],
    seed: int = 0,
    max_samples: int | None = None,
) -> np.ndarray:
    """(len(codes), K) P[r, j]: held-out balanced accuracy of a linear probe from codes[r]
    (N, D_r) to task j (targets (N, K) task classes)."""
    fit, score = held_out_split(targets, seed, max_samples)
    _check_classes(targets, fit, score, names)
    return np.array(
        [
            [
                probe_balanced_accuracy(c[fit], targets[fit, j], c[score], targets[score, j], seed)
                for j in range(targets.shape[1])
            ]
            for c in codes
        ]
    )


def block_importance(
    codes: Sequence[np.ndarray],
    targets: np.ndarray,
    names: Sequence[str],
    alpha: float = 0.02,
    seed: int = 0,
    max_samples: int | None = None,
) -> np.ndarray:
    """(len(codes), K) R[r, j]: summed |lasso weight| of block r for task j, from one lasso per
    class indicator of task j (one for a binary task) on all blocks side by side, fitted on
    the fit half of held_out_split (standardised codes and targets)."""
    from sklearn.linear_model import Lasso

    fit, score = held_out_split(targets, seed, max_samples)
    _check_classes(targets, fit, score, names)
    x = np.concatenate([c[fit] for c in codes], 1)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    bounds = np.cumsum([0] + [c.shape[1] for c in codes])
    matrix = np.zeros((len(codes), targets.shape[1]))
    for j in range(targets.shape[1]):
        classes = np.unique(targets[:, j])
        for c in classes[1:] if len(classes) == 2 else classes:
            y = (targets[fit, j] == c).astype(np.float64)
            y = (y - y.mean()) / (y.std() + 1e-8)
            weights = np.abs(Lasso(alpha=alpha, random_state=seed, max_iter=5000).fit(x, y).coef_)
            matrix[:, j] += [weights[lo:hi].sum() for lo, hi in zip(bounds[:-1], bounds[1:])]
    return matrix


def modularity_metrics(
    tsn_codes: Sequence[np.ndarray],
    ckn_code: np.ndarray,
    targets: np.ndarray,
    num_classes: Sequence[int],
    names: Sequence[str],
    seed: int = 0,
    max_samples: int | None = None,
) -> tuple[dict[str, float], dict]:
    """Scalar summaries (test/cross_probe/*, test/dci_tsn/*) and the matrices behind them
    (rows: the K TSNs then 'ckn'; columns: the K tasks; TSN k belongs to task k)."""
    k = len(tsn_codes)
    if targets.shape[1] != k:
        raise ValueError("one TSN code per task")
    codes = [*tsn_codes, ckn_code]
    probe = cross_probe_matrix(codes, targets, names, seed, max_samples)
    importance = block_importance(codes, targets, names, seed=seed, max_samples=max_samples)
    off = ~np.eye(k, dtype=bool)
    tsn_probe = probe[:k]
    totals = importance.sum(0)
    share = np.divide(importance, totals, out=np.zeros_like(importance), where=totals > 0)
    disentanglement, completeness = dci_from_importance(importance[:k])
    out = {
        "test/cross_probe/own_mean": float(np.mean(np.diag(tsn_probe))),
        "test/cross_probe/other_mean": float(tsn_probe[off].mean()) if k > 1 else float("nan"),
        "test/cross_probe/other_max": float(tsn_probe[off].max()) if k > 1 else float("nan"),
        "test/cross_probe/ckn_mean": float(probe[k].mean()),
        "test/cross_probe/chance": float(np.mean([1.0 / n for n in num_classes])),
        "test/dci_tsn/disentanglement": disentanglement,
        "test/dci_tsn/completeness": completeness,
        "test/dci_tsn/own_share": float(np.mean(np.diag(share[:k]))),
        "test/dci_tsn/leak_share": float(np.mean(share[:k].sum(0) - np.diag(share[:k]))),
        "test/dci_tsn/ckn_share": float(np.mean(share[k])),
    }
    matrices = {
        "rows": [*names, "ckn"],
        "tasks": list(names),
        "cross_probe": probe.tolist(),
        "importance": importance.tolist(),
    }
    return out, matrices
