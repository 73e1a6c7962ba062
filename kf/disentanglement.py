"""Disentanglement of a representation against known ground-truth factors, as defined in
google-research/disentanglement_lib, on scikit-learn:

- MIG (Chen et al. 2018): codes discretised into 20 equal-width bins; for every factor the
  gap between the two codes with the highest mutual information, over the factor's entropy.
- DCI (Eastwood & Williams 2018): an importance matrix R (codes x factors) from gradient
  boosted trees (or lasso); disentanglement = sum_i rho_i (1 - H_K(P_i.)), completeness =
  sum_j rho_j (1 - H_C(P_.j)), informativeness = held-out accuracy of the trees.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score

from tasks.errors import UserError

IMPORTANCES = ("gbt", "lasso")


def discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """(N, C) codes to bin indices per code dimension (equal-width histogram bins)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for i in range(codes.shape[1]):
        edges = np.histogram(codes[:, i], num_bins)[1][:-1]
        out[:, i] = np.digitize(codes[:, i], edges)
    return out


def mutual_information(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(C, F) discrete mutual information (nats) between code bins and factor values."""
    return np.array(
        [
            [mutual_info_score(factors[:, j], codes[:, i]) for j in range(factors.shape[1])]
            for i in range(codes.shape[1])
        ]
    )


def mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
    """Mutual information gap, averaged over factors; needs at least two code dimensions."""
    if codes.shape[1] < 2:
        raise UserError("MIG needs a representation with at least two dimensions.")
    info = mutual_information(discretize(codes, num_bins), factors)
    factor_entropy = np.array([mutual_info_score(factors[:, j], factors[:, j]) for j in range(factors.shape[1])])
    top = np.sort(info, axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / factor_entropy))


def importance_matrix(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
    method: str = "gbt",
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """(C, F) importances and the mean held-out score (accuracy for gbt, R^2 for lasso)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import Lasso

    num_codes, num_factors = train_codes.shape[1], train_factors.shape[1]
    matrix = np.zeros((num_codes, num_factors))
    scores = []
    if method == "lasso":
        mean, std = train_codes.mean(0), train_codes.std(0) + 1e-8
        train_x, test_x = (train_codes - mean) / std, (test_codes - mean) / std
    for j in range(num_factors):
        if method == "gbt":
            model = GradientBoostingClassifier(random_state=seed).fit(train_codes, train_factors[:, j])
            matrix[:, j] = np.abs(model.feature_importances_)
            scores.append(float(np.mean(model.predict(test_codes) == test_factors[:, j])))
        elif method == "lasso":
            target = train_factors[:, j].astype(float)
            model = Lasso(alpha=0.02, random_state=seed).fit(train_x, (target - target.mean()) / (target.std() + 1e-8))
            matrix[:, j] = np.abs(model.coef_)
            scores.append(float(model.score(test_x, (test_factors[:, j] - target.mean()) / (target.std() + 1e-8))))
        else:
            raise UserError(f"Unknown DCI importance '{method}'. Use one of {list(IMPORTANCES)}.")
    return matrix, float(np.mean(scores))


def dci_from_importance(matrix: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of a (codes, factors) importance matrix."""
    total = matrix.sum()
    if total == 0:
        return 0.0, 0.0
    per_code = 1.0 - entropy(matrix.T + 1e-11, base=matrix.shape[1])
    disentanglement = float(np.sum(per_code * matrix.sum(1) / total))
    per_factor = 1.0 - entropy(matrix + 1e-11, base=matrix.shape[0])
    completeness = float(np.sum(per_factor * matrix.sum(0) / total))
    return disentanglement, completeness


def dci(
    codes: np.ndarray, factors: np.ndarray, method: str = "gbt", train_fraction: float = 0.5, seed: int = 0
) -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness, with importances fitted on a
    seeded `train_fraction` of the samples and informativeness measured on the rest."""
    if factors.shape[1] < 2:
        raise UserError("DCI needs at least two ground-truth factors.")
    order = np.random.default_rng(seed).permutation(len(codes))
    cut = int(len(codes) * train_fraction)
    train, test = order[:cut], order[cut:]
    matrix, informativeness = importance_matrix(codes[train], factors[train], codes[test], factors[test], method, seed)
    disentanglement, completeness = dci_from_importance(matrix)
    return {"disentanglement": disentanglement, "completeness": completeness, "informativeness": informativeness}
