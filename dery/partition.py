"""Stage 2: cover-set partition. Every member is cut into K contiguous blocks, each at most
(1 + eps) / K of the member's node parameters (a single node larger than that is a block
of its own). The M*K blocks are grouped into K equivalence sets by alternating
  (a) one-node boundary moves between neighbouring blocks that raise S(block, set anchor),
  (b) reassignment of every block to its most similar anchor,
  (c) medoid anchors: the member of each set most similar to the rest of it,
until nothing changes, over R seeded restarts; the best objective wins.

Objective `anchor` (paper Eq. 2): sum over blocks of S(block, anchor of its set);
`pairwise` (the original's total_cost): sum over sets of S over all pairs in the set.

    python -m dery.partition similarity=<dery.similarity run dir> [K=4 eps=0.2 restarts=200]
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig
from tqdm.auto import tqdm

import tasks  # noqa: F401  (resolvers)
from dery.app import read_stage, run_stage
from dery.blocks import Block, BlockSimilarity
from dery.plots import plot_partition
from tasks.config.location import CONFIG_SOURCE
from tasks.errors import UserError
from tasks.io.files import read_json, read_safetensors, write_text

OBJECTIVES = ("anchor", "pairwise")


@dataclass
class MemberNodes:
    """What the partition needs of a member: its node parameter counts, the size cap and
    every cut of it into K blocks that respects the cap."""

    name: str
    params: np.ndarray
    cap: float
    feasible: np.ndarray  # (F, K + 1) boundaries 0 = c0 < c1 < .. < cK = N

    @classmethod
    def of(cls, name: str, node_params: Sequence[int], K: int, eps: float) -> MemberNodes:
        params = np.asarray(node_params, dtype=np.int64)
        n = len(params)
        if n < K:
            raise UserError(f"Zoo member '{name}' has {n} nodes, fewer than K={K}. Lower K or drop the member.")
        inner = np.array(list(itertools.combinations(range(1, n), K - 1)), dtype=np.int64).reshape(-1, K - 1)
        cuts = np.concatenate([np.zeros((len(inner), 1), np.int64), inner, np.full((len(inner), 1), n)], axis=1)
        prefix = np.concatenate([[0], np.cumsum(params)])
        largest = (prefix[cuts[:, 1:]] - prefix[cuts[:, :-1]]).max(axis=1)
        # The paper's cap; where no K-cut meets it (one node, or a few large ones, exceed it),
        # the smallest cap that some K-cut meets.
        cap = max((1 + eps) * params.sum() / K, float(largest.min()))
        return cls(name, params, cap, cuts[largest <= cap])

    def block_params(self, start: int, end: int) -> int:
        return int(self.params[start : end + 1].sum())

    def fits(self, start: int, end: int) -> bool:
        return end >= start and self.block_params(start, end) <= self.cap


def blocks_of(member: str, cuts: Sequence[int]) -> list[Block]:
    return [Block(member, k, cuts[k], cuts[k + 1] - 1) for k in range(len(cuts) - 1)]


def objective(sim: BlockSimilarity, blocks: list[Block], assign: np.ndarray, anchors: list[Block], kind: str) -> float:
    if kind == "anchor":
        return float(sum(sim(b, anchors[j]) for b, j in zip(blocks, assign)))
    total = 0.0
    for j in range(len(anchors)):
        group = [b for b, g in zip(blocks, assign) if g == j]
        if len(group) > 1:
            total += float(np.triu(sim.matrix(group, group), 1).sum())
    return total


def _reassign(sim: BlockSimilarity, blocks: list[Block], anchors: list[Block]) -> np.ndarray:
    """Each block to its most similar anchor; an empty set takes the block that is least
    similar to its own anchor (from a set that keeps at least one block)."""
    scores = sim.matrix(blocks, anchors)
    assign = scores.argmax(axis=1)
    for j in range(len(anchors)):
        if (assign == j).any():
            continue
        counts = np.bincount(assign, minlength=len(anchors))
        movable = [i for i in range(len(blocks)) if counts[assign[i]] > 1]
        worst = min(movable, key=lambda i: scores[i, assign[i]])
        assign[worst] = j
        anchors[j] = blocks[worst]
    return assign


def _medoids(sim: BlockSimilarity, blocks: list[Block], assign: np.ndarray, K: int) -> list[Block]:
    anchors = []
    for j in range(K):
        group = [b for b, g in zip(blocks, assign) if g == j]
        anchors.append(group[int(sim.matrix(group, group).sum(axis=1).argmax())])
    return anchors


def _refine(
    sim: BlockSimilarity, member: MemberNodes, cuts: list[int], groups: Sequence[int], anchors: list[Block]
) -> bool:
    """One left-to-right pass of one-node boundary moves for one member; True if any moved."""
    moved = False
    for k in range(len(cuts) - 2):
        a, b = anchors[groups[k]], anchors[groups[k + 1]]
        best, best_score = cuts[k + 1], None
        for cut in (cuts[k + 1], cuts[k + 1] + 1, cuts[k + 1] - 1):  # keep, forward, backward
            if not (member.fits(cuts[k], cut - 1) and member.fits(cut, cuts[k + 2] - 1)):
                continue
            score = sim(Block(member.name, k, cuts[k], cut - 1), a) + sim(
                Block(member.name, k + 1, cut, cuts[k + 2] - 1), b
            )
            if best_score is None or score > best_score + 1e-12:
                best, best_score = cut, score
        if best != cuts[k + 1]:
            cuts[k + 1], moved = best, True
    return moved


def partition_once(
    sim: BlockSimilarity, members: list[MemberNodes], K: int, rng: np.random.Generator, max_iter: int, kind: str
) -> tuple[float, dict[str, list[int]], np.ndarray, list[Block], int]:
    cuts = {m.name: [int(c) for c in m.feasible[rng.integers(len(m.feasible))]] for m in members}
    blocks = [b for m in members for b in blocks_of(m.name, cuts[m.name])]
    anchors = [blocks[i] for i in rng.choice(len(blocks), size=K, replace=False)]
    assign = _reassign(sim, blocks, anchors)
    for iteration in range(1, max_iter + 1):  # noqa: B007  (returned after the loop)
        moved = False
        for i, m in enumerate(members):
            moved |= _refine(sim, m, cuts[m.name], assign[i * K : (i + 1) * K], anchors)
        blocks = [b for m in members for b in blocks_of(m.name, cuts[m.name])]
        new_assign = _reassign(sim, blocks, anchors)
        new_anchors = _medoids(sim, blocks, new_assign, K)
        stable = not moved and (new_assign == assign).all() and new_anchors == anchors
        assign, anchors = new_assign, new_anchors
        if stable:
            break
    return objective(sim, blocks, assign, anchors, kind), cuts, assign, anchors, iteration


def partition(
    sim: BlockSimilarity,
    node_params: dict[str, Sequence[int]],
    K: int = 4,
    eps: float = 0.2,
    restarts: int = 200,
    max_iter: int = 200,
    seed: int = 0,
    kind: str = "anchor",
) -> dict[str, Any]:
    """The best partition over `restarts` random starts; reproducible from `seed`."""
    if kind not in OBJECTIVES:
        raise UserError(f"objective='{kind}' is unknown; use one of {list(OBJECTIVES)}.")
    if K < 1 or restarts < 1 or max_iter < 1:
        raise UserError(f"K ({K}), restarts ({restarts}) and max_iter ({max_iter}) must be at least 1.")
    if not node_params:
        raise UserError("The partition needs at least one zoo member.")
    members = [MemberNodes.of(name, params, K, eps) for name, params in node_params.items()]
    rng = np.random.default_rng(seed)
    best, history = None, []
    for restart in tqdm(range(restarts), desc="partition restarts", unit="restart", disable=None):
        result = partition_once(sim, members, K, rng, max_iter, kind)
        history.append(result[0])
        if best is None or result[0] > best[0] + 1e-12:
            best = (*result, restart)
    score, cuts, assign, anchors, iterations, restart = best
    return {
        "K": K,
        "eps": eps,
        "seed": seed,
        "restarts": restarts,
        "objective": score,
        "objective_kind": kind,
        "same_stage_only": sim.same_stage_only,
        "best_restart": restart,
        "iterations": iterations,
        "cuts": cuts,
        "assign": [int(a) for a in assign],
        "anchors": [(a.member, a.stage) for a in anchors],
        "caps": {m.name: m.cap for m in members},
        "history": history,
    }


def describe(result: dict[str, Any], zoo: dict[str, Any]) -> dict[str, Any]:
    """The partition as saved: per member its blocks (nodes, parameters, shapes, set)."""
    K = result["K"]
    out = {k: v for k, v in result.items() if k not in ("cuts", "assign", "anchors", "caps")}
    out["members"] = {}
    out["sets"] = [{"anchor": {"member": m, "stage": s}, "blocks": []} for m, s in result["anchors"]]
    for i, (name, cuts) in enumerate(result["cuts"].items()):
        info = zoo["members"][name]
        blocks = []
        for b in blocks_of(name, cuts):
            group = result["assign"][i * K + b.stage]
            blocks.append(
                {
                    "stage": b.stage,
                    "start": b.start,
                    "end": b.end,
                    "nodes": info["nodes"][b.start : b.end + 1],
                    "params": int(sum(info["node_params"][b.start : b.end + 1])),
                    "set": group,
                    "in_shape": info["in_shapes"][b.start],
                    "out_shape": info["out_shapes"][b.end],
                }
            )
            out["sets"][group]["blocks"].append({"member": name, "stage": b.stage})
        out["members"][name] = {
            "cuts": list(cuts),
            "cap": result["caps"][name],
            "params": int(sum(info["node_params"])),
            "blocks": blocks,
        }
    return out


def load_similarity(run_dir: str | Path) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    summary = read_stage(
        run_dir, "similarity", "python -m dery.similarity zoo.members.<name>.weights=... (see docs/dery.md)"
    )
    zoo = read_json(summary["zoo"], "The similarity run's zoo.json")
    cka = read_safetensors(summary["similarity"], "The similarity run's matrix")["cka"].numpy()
    return summary, cka, zoo


def compute(cfg: DictConfig, out: Path) -> dict[str, Any]:
    summary, cka, zoo = load_similarity(cfg.similarity)
    sim = BlockSimilarity(cka, zoo["offsets"], cfg.same_stage_only)
    node_params = {name: m["node_params"] for name, m in zoo["members"].items()}
    result = partition(sim, node_params, cfg.K, cfg.eps, cfg.restarts, cfg.max_iter, cfg.seed, cfg.objective)
    saved = {
        "similarity_run": str(Path(str(cfg.similarity)).expanduser().resolve()),
        "zoo": summary["zoo"],
        **describe(result, zoo),
    }
    path = out / "partition.json"
    write_text(path, json.dumps(saved, indent=2))
    plot = plot_partition(saved, out / "plots" / "partition.png")
    return {
        "partition": str(path),
        "plots": [str(plot)],
        "objective": saved["objective"],
        "best_restart": saved["best_restart"],
        "sets": [[f"{b['member']}[{b['stage']}]" for b in s["blocks"]] for s in saved["sets"]],
    }


@hydra.main(version_base="1.3", config_path=CONFIG_SOURCE, config_name="dery/partition")
def main(cfg: DictConfig) -> None:
    run_stage("partition", cfg, compute)


def command() -> None:
    """`kt-dery-partition` (or `python -m dery.partition`): the command line and config are checked first;
    no traceback for a user mistake."""
    from tasks.run.launch import hydra_command

    hydra_command(main, "dery/partition")


if __name__ == "__main__":
    command()
