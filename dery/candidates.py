"""Candidates of the reassembly search. A candidate takes, for every stage position k, one
block that sat at position k in its own network, with every equivalence set used once
(paper Eqs. 8-11). Topology rule (on by default): the first block is a CNN and CNN blocks
come before transformer blocks. Budgets bound the parameters and FLOPs of the exact
network that will be built (dery/plan.py).

  exhaustive  every valid candidate is planned exactly; the feasible ones, largest first
  milp        scipy's milp yields the largest feasible candidates one by one (no-good cuts)
  random      the paper's random search over random valid candidates
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from dery.blocks import Block
from dery.plan import Plan, Planner, buildable_plans
from dery.zoo import Member
from tasks.errors import UserError

MODES = ("auto", "exhaustive", "milp", "random")


@dataclass
class Budget:
    params: float | None = None
    flops: float | None = None
    min_params: float | None = None
    min_flops: float | None = None

    def admits(self, params: float, flops: float) -> bool:
        return ((self.params is None or params <= self.params) and (self.flops is None or flops <= self.flops)
                and (self.min_params is None or params > self.min_params) and (self.min_flops is None or flops > self.min_flops))

    def describe(self) -> str:
        parts = [f"params <= {self.params:,.0f}" if self.params is not None else "",
                 f"FLOPs <= {self.flops:,.0f}" if self.flops is not None else "",
                 f"params > {self.min_params:,.0f}" if self.min_params is not None else "",
                 f"FLOPs > {self.min_flops:,.0f}" if self.min_flops is not None else ""]
        return ", ".join(p for p in parts if p) or "no budget"


class Pool:
    """The blocks a search can pick, by stage position, with their set and layout."""

    def __init__(self, partition: dict[str, Any], members: dict[str, Member], topology_rule: bool = True):
        self.K, self.members, self.topology_rule = partition["K"], members, topology_rule
        self.sets: dict[tuple[str, int], int] = {}
        self.by_stage: list[list[Block]] = [[] for _ in range(self.K)]
        for name, info in partition["members"].items():
            for b in info["blocks"]:
                block = Block(name, b["stage"], b["start"], b["end"])
                self.by_stage[block.stage].append(block)
                self.sets[(name, block.stage)] = b["set"]

    def is_cnn(self, block: Block) -> bool:
        return self.members[block.member].layout == "nchw"

    def set_of(self, block: Block) -> int:
        return self.sets[(block.member, block.stage)]

    def valid(self, blocks: Sequence[Block]) -> bool:
        """One block per set (no duplicates); with the topology rule, a CNN first and no CNN
        after a transformer."""
        if len({self.set_of(b) for b in blocks}) != len(blocks):
            return False
        if self.topology_rule:
            cnn = [self.is_cnn(b) for b in blocks]
            return cnn[0] and all(a or not b for a, b in zip(cnn, cnn[1:]))
        return True

    def size(self) -> int:
        return math.prod(len(b) for b in self.by_stage)

    def candidates(self) -> Iterator[tuple[Block, ...]]:
        return (c for c in itertools.product(*self.by_stage) if self.valid(c))

    def label(self, blocks: Sequence[Block]) -> list[str]:
        return [f"{b.member}[{b.stage}]" for b in blocks]


def infeasible(budget: Budget, plans: list[Plan]) -> UserError:
    """The error for a budget no valid network meets: names the smallest feasible budget."""
    if not plans:
        return UserError("No valid candidate exists: every combination reuses an equivalence set or breaks the topology "
                         "rule. Set topology_rule=false, or partition with other settings (K, same_stage_only).")
    fit_flops = [p for p in plans if budget.flops is None or p.flops <= budget.flops] or plans
    fit_params = [p for p in plans if budget.params is None or p.params <= budget.params] or plans
    small_p = min(fit_flops, key=lambda p: p.params)
    small_f = min(fit_params, key=lambda p: p.flops)
    return UserError(
        f"No reassembled network fits the budget ({budget.describe()}). The smallest feasible network has "
        f"{small_p.params:,} parameters ({small_p.flops:,} FLOPs); the cheapest in FLOPs has {small_f.flops:,} FLOPs "
        f"({small_f.params:,} parameters). Raise the budget to at least budget.params={small_p.params}"
        + (f" budget.flops={small_p.flops}" if budget.flops is not None else "") + ".")


def exhaustive(pool: Pool, planner: Planner, budget: Budget) -> tuple[list[Plan], list[Plan]]:
    """(feasible plans sorted by parameters, largest first; all valid buildable plans)."""
    plans = buildable_plans(planner, tqdm(list(pool.candidates()), desc="plans", unit="cand", disable=None))
    feasible = sorted((p for p in plans if budget.admits(p.params, p.flops)), key=lambda p: (-p.params, -p.flops))
    return feasible, plans


def _source_shape(member: Member, shape: Sequence[int]) -> tuple[int, ...]:
    """A node shape as the stitched network carries it (no CLS / prefix tokens)."""
    shape = tuple(shape)
    return (shape[0] - member.prefix_tokens, *shape[1:]) if member.layout == "tokens" else shape


def milp(pool: Pool, planner: Planner, budget: Budget, limit: int, minimise: bool = False) -> list[Plan]:
    """Up to `limit` feasible plans, best estimated parameters first (smallest with
    `minimise`), from scipy's milp with no-good cuts. Costs are linear in block choices
    plus adjacent pairs (stem: first block, head: last block, adapter: the pair); they are
    exact when every block sees its native resolution, and every plan is checked exactly."""
    from scipy.optimize import Bounds, LinearConstraint, milp as solve
    from scipy.sparse import csr_matrix, vstack

    blocks = [b for stage in pool.by_stage for b in stage]
    index = {b: i for i, b in enumerate(blocks)}
    pairs = [(a, b) for k in range(pool.K - 1) for a in pool.by_stage[k] for b in pool.by_stage[k + 1]]
    n = len(blocks) + len(pairs)
    cost = np.zeros((2, n))  # params, flops
    for b in blocks:
        member = pool.members[b.member]
        in_shape = _source_shape(member, member.in_shapes[b.start])
        cost[0, index[b]] += sum(member.node_params[b.start:b.end + 1])
        cost[1, index[b]] += planner.block_cost(b, in_shape)[0]
        if b.stage == 0:
            params, flops, _ = planner.part_cost(planner.stem(b), planner.input_size)
            cost[:, index[b]] += (params, flops)
        if b.stage == pool.K - 1:
            out_shape = _source_shape(member, member.out_shapes[b.end])
            head = {"kind": "head", "in": member.out_channels(b.end), "out": planner.num_classes, "layout": member.layout}
            cost[:, index[b]] += planner.part_cost(head, out_shape)[:2]
    for j, (a, b) in enumerate(pairs):
        src = pool.members[a.member]
        shape = _source_shape(src, src.out_shapes[a.end])
        cost[:, len(blocks) + j] = planner.part_cost(planner.adapter(a, b, shape), shape)[:2]
    rows: list[tuple[dict[int, float], float, float]] = []
    for stage in pool.by_stage:  # one block per position
        rows.append(({index[b]: 1 for b in stage}, 1, 1))
    for g in set(pool.sets.values()):  # each set at most once
        rows.append(({index[b]: 1 for b in blocks if pool.set_of(b) == g}, -np.inf, 1))
    upper = np.ones(n)
    if pool.topology_rule:
        for b in pool.by_stage[0]:
            if not pool.is_cnn(b):
                upper[index[b]] = 0
        for k in range(pool.K - 1):  # transformers at k imply transformers at k + 1
            row = {index[b]: 1 for b in pool.by_stage[k] if not pool.is_cnn(b)}
            for b in pool.by_stage[k + 1]:
                if not pool.is_cnn(b):
                    row[index[b]] = row.get(index[b], 0) - 1
            rows.append((row, -np.inf, 0))
    # z_ab = x_a * x_b as a flow between neighbouring positions: the z leaving a block sum to
    # its x, and so do the z entering a block (tight, and two rows per block).
    leaving: dict[Block, dict[int, float]] = {}
    entering: dict[Block, dict[int, float]] = {}
    for j, (a, b) in enumerate(pairs):
        leaving.setdefault(a, {index[a]: -1})[len(blocks) + j] = 1
        entering.setdefault(b, {index[b]: -1})[len(blocks) + j] = 1
    rows += [(row, 0, 0) for row in [*leaving.values(), *entering.values()]]
    for r, (limit_value, floor) in enumerate(((budget.params, budget.min_params), (budget.flops, budget.min_flops))):
        if limit_value is not None or floor is not None:
            rows.append(({i: cost[r, i] for i in range(n) if cost[r, i]}, -np.inf if floor is None else floor + 1,
                         np.inf if limit_value is None else limit_value))
    integrality = np.r_[np.ones(len(blocks)), np.zeros(len(pairs))]
    objective = cost[0] if minimise else -cost[0]
    def matrix(entries: list[tuple[dict[int, float], float, float]]) -> csr_matrix:
        data = [(i, col, v) for i, (row, _, _) in enumerate(entries) for col, v in row.items()]
        r, c, v = zip(*data) if data else ((), (), ())
        return csr_matrix((v, (r, c)), shape=(len(entries), n))

    base, lower, higher = matrix(rows), [r[1] for r in rows], [r[2] for r in rows]
    found: list[Plan] = []
    cuts = []
    while len(found) < limit:
        constraint = LinearConstraint(vstack([base, *cuts]) if cuts else base,
                                      lower + [-np.inf] * len(cuts), higher + [pool.K - 1] * len(cuts))
        result = solve(objective, constraints=constraint, integrality=integrality, bounds=Bounds(np.zeros(n), upper))
        if result.status != 0 or result.x is None:
            break
        chosen = sorted((blocks[i] for i in range(len(blocks)) if result.x[i] > 0.5), key=lambda b: b.stage)
        cuts.append(matrix([({index[b]: 1 for b in chosen}, 0, 0)]))  # never this combination again
        found += [p for p in buildable_plans(planner, [chosen]) if budget.admits(p.params, p.flops)]
    return found


def random_search(pool: Pool, planner: Planner, budget: Budget, count: int, rng: np.random.Generator) -> list[Plan]:
    """The paper's random search: `count` distinct random valid candidates; the feasible ones."""
    seen: set[tuple[Block, ...]] = set()
    attempts = 0
    while len(seen) < count and attempts < 50 * count:
        attempts += 1
        candidate = tuple(stage[rng.integers(len(stage))] for stage in pool.by_stage)
        if pool.valid(candidate):
            seen.add(candidate)
    return [p for p in buildable_plans(planner, sorted(seen, key=pool.label)) if budget.admits(p.params, p.flops)]


def search(pool: Pool, planner: Planner, budget: Budget, mode: str, max_scored: int, exhaustive_limit: int,
           random_candidates: int, seed: int) -> tuple[list[Plan], dict[str, Any]]:
    """The feasible plans to score, and how they were found."""
    if mode not in MODES:
        raise UserError(f"search mode '{mode}' is unknown; use one of {list(MODES)}.")
    size = pool.size()
    if mode == "auto":
        mode = "exhaustive" if size <= exhaustive_limit else "milp"
    start = time.perf_counter()
    info: dict[str, Any] = {"mode": mode, "combinations": size}
    if mode == "exhaustive":
        feasible, plans = exhaustive(pool, planner, budget)
        info["valid"] = len(plans)
        if not feasible:
            raise infeasible(budget, plans)
    elif mode == "milp":
        feasible = milp(pool, planner, budget, max_scored)
        if not feasible:
            raise infeasible(budget, milp(pool, planner, Budget(), 1, minimise=True)
                             + milp(pool, planner, Budget(flops=budget.flops), 1, minimise=True))
    else:
        feasible = random_search(pool, planner, budget, random_candidates, np.random.default_rng(seed))
        if not feasible:
            raise infeasible(budget, exhaustive(pool, planner, Budget())[1] if size <= exhaustive_limit else [])
    info["feasible"] = len(feasible)
    info["search_s"] = time.perf_counter() - start
    return (feasible if mode == "random" else feasible[:max_scored]), info
