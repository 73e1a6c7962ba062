"""Blocks (contiguous runs of a member's nodes) and their functional similarity.

Paper, Def. 3: S(B, B') = CKA(inputs of B, inputs of B') + CKA(outputs of B, outputs of B').
The inputs are the real block inputs: the output of the node before the block (the stem's
output for a first block). `same_stage_only=True` reproduces the released code, where a
typo makes S = 0 for any two blocks at different stage positions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Block:
    member: str
    stage: int  # position k of the block inside its member (0..K-1)
    start: int  # first node index
    end: int  # last node index (inclusive)

    @property
    def size(self) -> int:
        return self.end - self.start + 1


class BlockSimilarity:
    """S between blocks, looked up from the (T, T) CKA matrix of all representations
    (member m's representation r sits at offsets[m] + r: r = 0 is node 0's input, r = i + 1
    is node i's output)."""

    def __init__(self, cka: np.ndarray, offsets: Mapping[str, int], same_stage_only: bool = False):
        self.cka = np.asarray(cka, dtype=np.float64)
        self.offsets = dict(offsets)
        self.same_stage_only = same_stage_only

    def _index(self, blocks: Sequence[Block]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        base = np.array([self.offsets[b.member] for b in blocks])
        return (
            base + np.array([b.start for b in blocks]),
            base + np.array([b.end + 1 for b in blocks]),
            np.array([b.stage for b in blocks]),
        )

    def matrix(self, rows: Sequence[Block], cols: Sequence[Block]) -> np.ndarray:
        """(len(rows), len(cols)) block similarities, in [0, 2]."""
        rin, rout, rstage = self._index(rows)
        cin, cout, cstage = self._index(cols)
        sim = self.cka[np.ix_(rin, cin)] + self.cka[np.ix_(rout, cout)]
        if self.same_stage_only:
            sim = np.where(rstage[:, None] == cstage[None, :], sim, 0.0)
        return sim

    def __call__(self, a: Block, b: Block) -> float:
        if self.same_stage_only and a.stage != b.stage:
            return 0.0
        oa, ob = self.offsets[a.member], self.offsets[b.member]
        return float(self.cka[oa + a.start, ob + b.start] + self.cka[oa + a.end + 1, ob + b.end + 1])
