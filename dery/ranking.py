"""How well a proxy ranks candidates by their trained accuracy: Kendall tau-b and Spearman
rho with percentile-bootstrap 95 % CIs over candidates, the top-1 regret (best accuracy
minus the accuracy of the proxy's own pick; tied picks count by their mean) and the top-k
hit rate (the share of the proxy's k best that are among the k most accurate)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _pair(scores: Sequence[float], accuracy: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    s, a = np.asarray(scores, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    if s.shape != a.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and accuracies {a.shape} must be two vectors of one length")
    return s, a


def _correlation(statistic, scores: Sequence[float], accuracy: Sequence[float]) -> float:
    """A rank correlation of scipy.stats; nan where either side is constant."""
    s, a = _pair(scores, accuracy)
    if np.ptp(s) == 0 or np.ptp(a) == 0:
        return float("nan")
    value = statistic(s, a).statistic
    return float("nan") if np.isnan(value) else float(value)


def kendall(scores: Sequence[float], accuracy: Sequence[float]) -> float:
    """Kendall tau-b."""
    from scipy.stats import kendalltau

    return _correlation(kendalltau, scores, accuracy)


def spearman(scores: Sequence[float], accuracy: Sequence[float]) -> float:
    """Spearman rho."""
    from scipy.stats import spearmanr

    return _correlation(spearmanr, scores, accuracy)


def bootstrap_ci(
    statistic, scores: Sequence[float], accuracy: Sequence[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95 % CI of `statistic(scores, accuracy)` over candidates resampled with
    replacement (resamples where it is undefined, e.g. all scores tied, are left out)."""
    s, a = _pair(scores, accuracy)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(len(s), size=len(s))
        value = statistic(s[idx], a[idx])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def top1_regret(scores: Sequence[float], accuracy: Sequence[float]) -> float:
    """Best accuracy minus that of the proxy's top pick (the mean over candidates tied for it)."""
    s, a = _pair(scores, accuracy)
    return float(a.max() - a[s == s.max()].mean())


def top_hit_rate(scores: Sequence[float], accuracy: Sequence[float], k: int = 5) -> float:
    """|proxy's top k ∩ the k most accurate| / k (ties broken by candidate order)."""
    s, a = _pair(scores, accuracy)
    k = min(k, len(s))
    by_score = set(np.argsort(-s, kind="stable")[:k].tolist())
    by_accuracy = set(np.argsort(-a, kind="stable")[:k].tolist())
    return len(by_score & by_accuracy) / k


def rank_report(scores: Sequence[float], accuracy: Sequence[float], seed: int = 0, k: int = 5) -> dict[str, Any]:
    """Every ranking number of one proxy against the trained accuracies."""
    return {
        "n": len(scores),
        "kendall_tau": kendall(scores, accuracy),
        "kendall_ci": bootstrap_ci(kendall, scores, accuracy, seed=seed),
        "spearman_rho": spearman(scores, accuracy),
        "spearman_ci": bootstrap_ci(spearman, scores, accuracy, seed=seed),
        "top1_regret": top1_regret(scores, accuracy),
        f"top{k}_hit_rate": top_hit_rate(scores, accuracy, k),
    }
