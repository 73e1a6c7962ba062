"""Linear CKA (Kornblith et al. 2019) in float64.

`cka_matrix` is exact over all samples and vectorised over every pair of representations
at once: HSIC(i, j) = <K_i, K_j>_F with the centred Gram matrices K = Xc Xc^T, computed
either in sample space (stacked Grams, one matmul per chunk pair) or in feature space
(||Xc_i^T Xc_j||_F^2 from one concatenated product), whichever costs fewer operations.
`chunked_cka` is the original's per-pair estimate (mean of mini-batch CKAs), kept for
comparison and the benchmark."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def centre(x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.float64).flatten(1)
    return x - x.mean(dim=0, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """CKA of one pair, straight from the definition (reference for tests)."""
    x, y = centre(x), centre(y)
    hsic = (x.T @ y).square().sum()
    return float(hsic / ((x.T @ x).square().sum().sqrt() * (y.T @ y).square().sum().sqrt()))


def chunked_cka(x: torch.Tensor, y: torch.Tensor, chunk: int = 2048) -> float:
    """The original's estimate: sample-space CKA on consecutive chunks, averaged."""
    values = []
    for start in range(0, x.shape[0], chunk):
        k = _gram(centre(x[start : start + chunk]))
        m = _gram(centre(y[start : start + chunk]))
        values.append(float((k * m).sum() / (k.norm() * m.norm())))
    return sum(values) / len(values)


def _gram(xc: torch.Tensor) -> torch.Tensor:
    return xc @ xc.T


def _chunks(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """Consecutive index groups whose summed size stays under `limit` (at least one each)."""
    groups, current, total = [], [], 0
    for i, size in enumerate(sizes):
        if current and total + size > limit:
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += size
    return groups + ([current] if current else [])


def _hsic_sample_space(xs: list[torch.Tensor], memory_bytes: int) -> torch.Tensor:
    n = xs[0].shape[0]
    per_gram = n * n * 8
    groups = _chunks([per_gram] * len(xs), max(per_gram, memory_bytes // 2))
    hsic = torch.zeros(len(xs), len(xs), dtype=torch.float64, device=xs[0].device)
    for a, rows in enumerate(groups):
        left = torch.stack([_gram(xs[i]).flatten() for i in rows])
        for cols in groups[a:]:
            right = left if cols is rows else torch.stack([_gram(xs[j]).flatten() for j in cols])
            block = left @ right.T
            hsic[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = block
            hsic[cols[0] : cols[-1] + 1, rows[0] : rows[-1] + 1] = block.T
    return hsic


def _hsic_feature_space(xs: list[torch.Tensor], memory_bytes: int) -> torch.Tensor:
    dims = [x.shape[1] for x in xs]
    z = torch.cat(xs, dim=1)
    owner = torch.repeat_interleave(torch.arange(len(xs), device=z.device), torch.tensor(dims, device=z.device))
    hsic = torch.zeros(len(xs), len(xs), dtype=torch.float64, device=z.device)
    row_limit = max(max(dims), memory_bytes // (8 * z.shape[1]))
    for rows in _chunks(dims, row_limit):
        lo = sum(dims[: rows[0]])
        hi = lo + sum(dims[i] for i in rows)
        squared = (z[:, lo:hi].T @ z).square()  # (rows' features, all features)
        per_col = torch.zeros(hi - lo, len(xs), dtype=torch.float64, device=z.device).index_add_(1, owner, squared)
        hsic[rows[0] : rows[-1] + 1] = torch.zeros(len(rows), len(xs), dtype=torch.float64, device=z.device).index_add_(
            0, owner[lo:hi] - rows[0], per_col
        )
    return hsic


def cka_matrix(features: Sequence[torch.Tensor], memory_bytes: int = 1 << 29, method: str = "auto") -> torch.Tensor:
    """(T, T) exact linear CKA between T representations of the same n samples, each (n, d_i).

    `method`: auto | samples | features (same result up to rounding)."""
    xs = [centre(f) for f in features]
    n, total = xs[0].shape[0], sum(x.shape[1] for x in xs)
    if any(x.shape[0] != n for x in xs):
        raise ValueError("every representation needs the same samples")
    if method == "auto":  # multiply-adds of each route
        method = "samples" if n * n * (total + len(xs) ** 2) < n * total * total else "features"
    hsic = _hsic_sample_space(xs, memory_bytes) if method == "samples" else _hsic_feature_space(xs, memory_bytes)
    hsic = (hsic + hsic.T) / 2  # symmetric to the last bit
    norms = hsic.diagonal().clamp_min(torch.finfo(torch.float64).tiny).sqrt()
    return hsic / (norms[:, None] * norms[None, :])
