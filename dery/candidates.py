"""Candidates of the reassembly search. A candidate takes, for every stage position k, one
block that sat at position k in its own network, with every equivalence set used once
(paper Eqs. 8-11). Topology rule (on by default): the first block is a CNN and CNN blocks
come before transformer blocks. Budgets bound the parameters and FLOPs of the exact
network that will be built (dery/plan.py). Which feasible candidates the proxy scores:

  random      the paper's search: `count` (500) drawn uniformly from the feasible set, without
              replacement (all of them when fewer are feasible)
  exhaustive  every feasible candidate
  milp        the `count` largest feasible candidates (in parameters, or in FLOPs when the
              proxy is FLOPs), exactly (dery/milp.py)
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dery.blocks import Block
from dery.milp import milp
from dery.plan import Plan, Planner, buildable_plans
from dery.zoo import Member
from tasks.errors import UserError

MODES = ("random", "exhaustive", "milp")


@dataclass
class Budget:
    params: float | None = None
    flops: float | None = None
    min_params: float | None = None
    min_flops: float | None = None

    def admits(self, params: float, flops: float) -> bool:
        return (
            (self.params is None or params <= self.params)
            and (self.flops is None or flops <= self.flops)
            and (self.min_params is None or params > self.min_params)
            and (self.min_flops is None or flops > self.min_flops)
        )

    def describe(self) -> str:
        parts = [
            f"params <= {self.params:,.0f}" if self.params is not None else "",
            f"FLOPs <= {self.flops:,.0f}" if self.flops is not None else "",
            f"params > {self.min_params:,.0f}" if self.min_params is not None else "",
            f"FLOPs > {self.min_flops:,.0f}" if self.min_flops is not None else "",
        ]
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
        return UserError(
            "No valid candidate exists: every combination reuses an equivalence set or breaks the "
            "topology rule. Set topology_rule=false, or partition with other settings "
            "(K, same_stage_only)."
        )
    fit_flops = [p for p in plans if budget.flops is None or p.flops <= budget.flops] or plans
    fit_params = [p for p in plans if budget.params is None or p.params <= budget.params] or plans
    small_p = min(fit_flops, key=lambda p: p.params)
    small_f = min(fit_params, key=lambda p: p.flops)
    return UserError(
        f"No reassembled network fits the budget ({budget.describe()}). The smallest feasible network has "
        f"{small_p.params:,} parameters ({small_p.flops:,} FLOPs); the cheapest in FLOPs has {small_f.flops:,} FLOPs "
        f"({small_f.params:,} parameters). Raise the budget to at least budget.params={small_p.params}"
        + (f" budget.flops={small_p.flops}" if budget.flops is not None else "")
        + "."
    )


def exhaustive(pool: Pool, planner: Planner, budget: Budget) -> tuple[list[Plan], list[Plan]]:
    """(feasible plans, largest first; every valid buildable plan), each planned exactly."""
    plans = buildable_plans(planner, tqdm(list(pool.candidates()), desc="plans", unit="cand", disable=None))
    feasible = sorted((p for p in plans if budget.admits(p.params, p.flops)), key=lambda p: (-p.params, -p.flops))
    return feasible, plans


def sample_feasible(
    pool: Pool, planner: Planner, budget: Budget, count: int, rng: np.random.Generator, max_draws: int
) -> list[Plan]:
    """Up to `count` distinct feasible plans drawn uniformly (rejection sampling from all
    combinations: uniform on the feasible set), for zoos too large to enumerate."""
    found: dict[tuple[Block, ...], Plan] = {}
    for _ in range(max_draws):
        if len(found) == count:
            break
        candidate = tuple(stage[rng.integers(len(stage))] for stage in pool.by_stage)
        if candidate in found or not pool.valid(candidate):
            continue
        plans = buildable_plans(planner, [candidate])
        if plans and budget.admits(plans[0].params, plans[0].flops):
            found[candidate] = plans[0]
    return list(found.values())


def random_search(
    pool: Pool, planner: Planner, budget: Budget, count: int, rng: np.random.Generator, enumerate_limit: int = 200_000
) -> tuple[list[Plan], list[Plan]]:
    """The paper's random search: (`count` feasible plans drawn uniformly without replacement,
    every valid plan when the zoo was enumerated, else [])."""
    if pool.size() > enumerate_limit:
        return sample_feasible(pool, planner, budget, count, rng, max_draws=200 * count), []
    feasible, plans = exhaustive(pool, planner, budget)
    picks = rng.choice(len(feasible), size=min(count, len(feasible)), replace=False) if feasible else []
    return [feasible[i] for i in sorted(picks)], plans


def search(
    pool: Pool,
    planner: Planner,
    budget: Budget,
    mode: str,
    count: int,
    seed: int,
    enumerate_limit: int = 200_000,
    objective: str = "params",
) -> tuple[list[Plan], dict[str, Any]]:
    """The feasible plans the proxy scores, and how they were found (`objective`: what the
    MILP maximises, params or flops)."""
    if mode not in MODES:
        raise UserError(f"search mode '{mode}' is unknown; use one of {list(MODES)}.")
    size = pool.size()
    if mode == "exhaustive" and size > enumerate_limit:
        raise UserError(
            f"mode=exhaustive would plan {size:,} combinations, above enumerate_limit={enumerate_limit:,}. "
            "Use mode=random (the paper's search), or raise enumerate_limit."
        )
    start = time.perf_counter()
    info: dict[str, Any] = {"mode": mode, "combinations": size}
    plans: list[Plan] = []
    if mode == "exhaustive":
        chosen, plans = exhaustive(pool, planner, budget)
    elif mode == "random":
        chosen, plans = random_search(pool, planner, budget, count, np.random.default_rng(seed), enumerate_limit)
    else:
        chosen = milp(pool, planner, budget, count, objective=objective)
    if plans:
        info["valid"] = len(plans)
        info["feasible"] = sum(1 for p in plans if budget.admits(p.params, p.flops))
    if not chosen:
        if not plans:  # not enumerated: the cheapest networks from the exact MILP
            plans = milp(pool, planner, Budget(), 1, minimise=True) + milp(
                pool, planner, Budget(flops=budget.flops), 1, minimise=True
            )
        raise infeasible(budget, plans)
    info["scored"] = len(chosen)
    info["search_s"] = time.perf_counter() - start
    return chosen, info
