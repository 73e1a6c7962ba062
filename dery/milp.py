"""The largest (or smallest) feasible candidates by mixed-integer programming, exactly.

A block's cost depends on the input it really gets, and that input depends on every block
before it (the stem's stride follows the first block; an adapter's stride follows the map it
receives and the size the next block saw in its own network, so a block can see a smaller
map than its native one and hand a smaller one on). The program is therefore a path through
a layered graph of *states* (stage k, block, the input shape it gets): an edge into a state
carries the exact parameters and FLOPs of the adapter (or stem) and of the block at that
input, an edge out of the last stage the head's. Every path is one candidate and its edge
sum is the candidate's exact plan (checked on every solution). Binary edge variables, flow
conservation, each equivalence set used at most once, the topology rule as missing edges,
the budgets as two rows; no-good cuts yield the next best candidate."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dery.blocks import Block
from dery.plan import Plan, Planner, Unbuildable

OBJECTIVES = ("params", "flops")  # the edge costs a path sums, in the order of StateGraph.edges' costs


@dataclass
class StateGraph:
    """states[i] = (stage, block, input shape); edges (source state or None, target state or
    None for the sink, params, flops)."""

    states: list[tuple[int, Block, tuple[int, ...]]] = field(default_factory=list)
    edges: list[tuple[int | None, int | None, int, int]] = field(default_factory=list)


def _block_params(planner: Planner, block: Block) -> int:
    return int(sum(planner.members[block.member].node_params[block.start : block.end + 1]))


def state_graph(pool, planner: Planner) -> StateGraph:
    """Every reachable (stage, block, input shape) with the exact cost of each step."""
    graph = StateGraph()
    index: dict[tuple, int] = {}

    def enter(k: int, block: Block, shape: tuple[int, ...], source: int | None, params: int, flops: int) -> None:
        try:
            block_flops, _ = planner.block_cost(block, shape)
        except Unbuildable:
            return
        key = (k, block, shape)
        if key not in index:
            index[key] = len(graph.states)
            graph.states.append(key)
        graph.edges.append((source, index[key], params + _block_params(planner, block), flops + block_flops))

    for block in pool.by_stage[0]:
        if pool.topology_rule and not pool.is_cnn(block):
            continue
        params, flops, shape = planner.part_cost(planner.stem(block), planner.input_size)
        enter(0, block, shape, None, params, flops)
    done = 0
    while done < len(graph.states):  # states are appended stage by stage
        k, block, shape = graph.states[done]
        out = planner.block_cost(block, shape)[1]
        if k == pool.K - 1:
            params, flops, _ = planner.part_cost(planner.head(block, out), out)
            graph.edges.append((done, None, params, flops))
        else:
            for nxt in pool.by_stage[k + 1]:
                back_to_cnn = pool.topology_rule and pool.is_cnn(nxt) and not pool.is_cnn(block)
                if pool.set_of(nxt) == pool.set_of(block) or back_to_cnn:
                    continue
                params, flops, shape_in = planner.part_cost(planner.adapter(block, nxt, out), out)
                enter(k + 1, nxt, shape_in, done, params, flops)
        done += 1
    return graph


def milp(
    pool,
    planner: Planner,
    budget,
    limit: int,
    minimise: bool = False,
    graph: StateGraph | None = None,
    objective: str = "params",
) -> list[Plan]:
    """Up to `limit` feasible plans, the most of `objective` (params or flops, both sums over
    the path's edges) first; the fewest with `minimise`."""
    if objective not in OBJECTIVES:
        raise ValueError(f"MILP objective '{objective}' is not additive; use one of {list(OBJECTIVES)}")
    from scipy.optimize import Bounds, LinearConstraint
    from scipy.optimize import milp as solve
    from scipy.sparse import csr_matrix, vstack

    graph = graph or state_graph(pool, planner)
    n = len(graph.edges)
    if n == 0:
        return []
    cost = np.array([[e[2] for e in graph.edges], [e[3] for e in graph.edges]], dtype=float)
    entering: dict[Block, list[int]] = {}
    sources = {j: 1 for j, e in enumerate(graph.edges) if e[0] is None}
    rows: list[tuple[dict[int, float], float, float]] = [(sources, 1, 1)]
    balance: list[dict[int, float]] = [{} for _ in graph.states]
    for j, (src, dst, _, _) in enumerate(graph.edges):
        if src is not None:
            balance[src][j] = balance[src].get(j, 0) - 1
        if dst is not None:
            balance[dst][j] = balance[dst].get(j, 0) + 1
            entering.setdefault(graph.states[dst][1], []).append(j)
    rows += [(row, 0, 0) for row in balance]
    for g in sorted(set(pool.sets.values())):  # each set at most once
        row = {j: 1 for b, js in entering.items() if pool.set_of(b) == g for j in js}
        if row:
            rows.append((row, -np.inf, 1))
    for r, (ceiling, floor) in enumerate(((budget.params, budget.min_params), (budget.flops, budget.min_flops))):
        if ceiling is not None or floor is not None:  # lower bounds are strict (the original's minC < params)
            rows.append(
                (
                    {j: cost[r, j] for j in range(n) if cost[r, j]},
                    -np.inf if floor is None else np.floor(floor) + 1,
                    np.inf if ceiling is None else ceiling,
                )
            )

    def matrix(entries: list[tuple[dict[int, float], float, float]]) -> csr_matrix:
        data = [(i, col, v) for i, (row, _, _) in enumerate(entries) for col, v in row.items()]
        r, c, v = zip(*data) if data else ((), (), ())
        return csr_matrix((v, (r, c)), shape=(len(entries), n))

    base, lower, upper = matrix(rows), [r[1] for r in rows], [r[2] for r in rows]
    row = cost[OBJECTIVES.index(objective)]
    weights = row if minimise else -row
    found: list[Plan] = []
    cuts: list[csr_matrix] = []
    while len(found) < limit:
        constraint = LinearConstraint(
            vstack([base, *cuts]) if cuts else base, lower + [-np.inf] * len(cuts), upper + [pool.K - 1] * len(cuts)
        )
        result = solve(weights, constraints=constraint, integrality=np.ones(n), bounds=Bounds(np.zeros(n), np.ones(n)))
        if result.status != 0 or result.x is None:
            break
        used = [j for j in range(n) if result.x[j] > 0.5]
        targets = [graph.edges[j][1] for j in used if graph.edges[j][1] is not None]
        blocks = sorted((graph.states[t][1] for t in targets), key=lambda b: b.stage)
        plan = planner.plan(blocks)
        if (plan.params, plan.flops) != (int(cost[0, used].sum()), int(cost[1, used].sum())):
            raise RuntimeError(
                f"MILP costs {cost[:, used].sum(1)} differ from the plan's {(plan.params, plan.flops)} for {blocks}"
            )
        if budget.admits(plan.params, plan.flops):  # guards against the solver's row tolerance
            found.append(plan)
        cuts.append(matrix([({j: 1 for b in blocks for j in entering[b]}, 0, 0)]))  # never these blocks again
    return found
