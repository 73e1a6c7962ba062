"""Linear CKA: golden values, invariances, and the vectorised matrix against the definition."""

from __future__ import annotations

import pytest
import torch

from dery.cka import chunked_cka, cka_matrix, linear_cka


def test_golden_one_dimensional():
    # centred x = (-1, 0, 1), y = (0, -1, 1): CKA = (x.y)^2 / (|x|^2 |y|^2) = 1 / (2 * 2)
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [0.0], [2.0]])
    assert linear_cka(x, y) == pytest.approx(0.25, abs=1e-15)
    assert cka_matrix([x, y])[0, 1].item() == pytest.approx(0.25, abs=1e-15)


def test_golden_two_dimensional():
    # x centred: rows (-1,0),(1,0),(0,1)-(0,1/3)... computed by hand below
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0]])  # centred: (-1,-1), (1,-1), (0,2)
    y = torch.tensor([[1.0], [1.0], [4.0]])  # centred: (-1), (-1), (2)
    # X^T Y = (1 - 1 + 0, 1 + 1 + 4) = (0, 6) -> 36; X^T X = diag(2, 6) -> sqrt(4 + 36); Y^T Y = 6
    assert linear_cka(x, y) == pytest.approx(36 / (40**0.5 * 6), abs=1e-14)


def test_invariances_and_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 7, generator=g)
    q, _ = torch.linalg.qr(torch.randn(7, 7, generator=g))
    m = cka_matrix([x, 3.5 * x @ q + 2.0, torch.randn(50, 3, generator=g)])
    assert m[0, 1].item() == pytest.approx(1.0, abs=1e-12)  # orthogonal transform, scale, shift
    assert torch.allclose(m.diagonal(), torch.ones(3, dtype=torch.float64))
    assert torch.equal(m, m.T) and m.dtype == torch.float64


@pytest.mark.parametrize("method", ["samples", "features", "auto"])
@pytest.mark.parametrize("memory", [1 << 29, 4096])  # one chunk, or many
def test_matrix_equals_definition(method, memory):
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(40, d, generator=g) @ torch.randn(d, d, generator=g) for d in (1, 5, 33, 2, 12)]
    reference = torch.tensor([[linear_cka(a, b) for b in feats] for a in feats], dtype=torch.float64)
    torch.testing.assert_close(cka_matrix(feats, memory_bytes=memory, method=method), reference, rtol=0, atol=1e-12)


def test_chunked_estimate_is_the_mean_of_chunk_ckas():
    # chunk 1: y = x, CKA 1; chunk 2: the 1-D golden pair above, CKA 1/4 -> the original's estimate 5/8
    x = torch.tensor([[1.0], [2.0], [3.0], [1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [2.0], [3.0], [1.0], [0.0], [2.0]])
    assert chunked_cka(x, y, chunk=3) == pytest.approx(5 / 8, abs=1e-15)
    # all six samples: centred x = (-1, 0, 1, -1, 0, 1), y = (-.5, .5, 1.5, -.5, -1.5, .5):
    # (x.y)^2 / (|x|^2 |y|^2) = 9 / (4 * 5.5) = 9 / 22
    assert linear_cka(x, y) == pytest.approx(9 / 22, abs=1e-15)
    assert cka_matrix([x, y])[0, 1].item() == pytest.approx(9 / 22, abs=1e-15)
    assert chunked_cka(x, y, chunk=6) == pytest.approx(9 / 22, abs=1e-15)  # one chunk: exact
