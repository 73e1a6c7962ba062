"""Block similarity and the cover-set partition: golden values, the parameter cap, a planted
structure it must recover, reproducibility from the seed, and the stage app's output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dery.blocks import Block, BlockSimilarity
from dery.partition import MemberNodes, objective, partition
from tasks.errors import UserError


def test_block_similarity_is_input_plus_output_cka():
    # member a: reps 0..3 (3 nodes); member b: reps 4..6 (2 nodes)
    cka = np.arange(49, dtype=float).reshape(7, 7) / 100
    sim = BlockSimilarity(cka, {"a": 0, "b": 4})
    x, y = Block("a", 1, 1, 2), Block("b", 0, 0, 0)
    # inputs: a's rep 1 (output of node 0) vs b's rep 4; outputs: a's rep 3 vs b's rep 5
    assert sim(x, y) == pytest.approx(cka[1, 4] + cka[3, 5])
    assert sim.matrix([x], [y, x])[0].tolist() == pytest.approx([cka[1, 4] + cka[3, 5], cka[1, 1] + cka[3, 3]])
    released = BlockSimilarity(cka, {"a": 0, "b": 4}, same_stage_only=True)
    assert released(x, y) == 0.0 and released.matrix([x], [y]).item() == 0.0
    assert released(x, Block("b", 1, 0, 1)) == pytest.approx(cka[1, 4] + cka[3, 6])


def test_cap_counts_parameters_per_member():
    member = MemberNodes.of("m", [10, 10, 10, 10, 40], K=2, eps=0.2)
    assert member.cap == pytest.approx(1.2 * 80 / 2)  # the paper's cap: 48
    assert [list(c) for c in member.feasible] == [[0, 4, 5]]  # (40 | 40) is the only cut within 48
    heavy = MemberNodes.of("h", [1, 1, 1, 1, 10], K=2, eps=0.2)
    # 8.4 is below the 10-parameter node: the cap rises to the smallest any 2-cut meets
    assert heavy.cap == 10 and [list(c) for c in heavy.feasible] == [[0, 4, 5]]
    with pytest.raises(UserError, match="fewer than K=4"):
        MemberNodes.of("s", [1, 2, 3], K=4, eps=0.2)


def planted(members=("a", "b", "c"), nodes=8):
    """Every member's representation r matches the others' r exactly (CKA 1) and nothing
    else (CKA 0.1): the best partition cuts all members alike, one set per stage."""
    n = nodes + 1
    rep = np.tile(np.arange(n), len(members))
    cka = np.where(rep[:, None] == rep[None, :], 1.0, 0.1)
    return BlockSimilarity(cka, {m: i * n for i, m in enumerate(members)}), {m: [5] * nodes for m in members}


def test_recovers_planted_structure_and_is_reproducible():
    sim, params = planted()
    result = partition(sim, params, K=4, eps=0.5, restarts=30, seed=3)
    cuts = list(result["cuts"].values())
    assert cuts[0] == cuts[1] == cuts[2]  # identical cuts in every member
    assert result["objective"] == pytest.approx(12 * 2.0)  # every block equals its anchor: S = 1 + 1
    sets = np.array(result["assign"]).reshape(3, 4)
    assert (sets == sets[0]).all() and sorted(sets[0]) == [0, 1, 2, 3]  # one set per stage position
    assert partition(sim, params, K=4, eps=0.5, restarts=30, seed=3) == result
    for c in result["cuts"].values():  # tiling and the cap hold
        assert c[0] == 0 and c[-1] == 8 and all(b - a >= 1 and 5 * (b - a) <= 1.5 * 40 / 4 for a, b in zip(c, c[1:]))


def test_objective_kinds():
    sim, params = planted(("a", "b"), 4)
    blocks = [Block(m, k, k, k) for m in ("a", "b") for k in range(4)]
    assign = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    anchors = blocks[:4]
    assert objective(sim, blocks, assign, anchors, "anchor") == pytest.approx(8 * 2.0)
    assert objective(sim, blocks, assign, anchors, "pairwise") == pytest.approx(4 * 2.0)  # one pair per set
    pairwise = partition(sim, params, K=4, eps=0.2, restarts=5, seed=0, kind="pairwise")
    assert pairwise["objective_kind"] == "pairwise" and pairwise["objective"] == pytest.approx(8.0)
    with pytest.raises(UserError, match="objective"):
        partition(sim, params, kind="sum")


def test_partition_stage_output(stages):
    saved = json.loads((stages["partition"] / "partition.json").read_text())
    zoo = json.loads((stages["similarity"] / "zoo.json").read_text())
    assert saved["K"] == 4 and saved["restarts"] == 20 and (stages["partition"] / "plots" / "partition.png").is_file()
    covered = {(b["member"], b["stage"]) for s in saved["sets"] for b in s["blocks"]}
    assert covered == {(m, k) for m in zoo["members"] for k in range(4)}  # every block in exactly one set
    for name, info in saved["members"].items():
        nodes = [n for b in info["blocks"] for n in b["nodes"]]
        assert nodes == zoo["members"][name]["nodes"]  # blocks tile the member in order
        assert all(b["params"] <= info["cap"] for b in info["blocks"])
