"""Plans, budgets and the reassembly search on the tiny zoo: the counted parameters and
FLOPs equal those of the built network, budgets hold, exhaustive and MILP search agree,
an infeasible budget names the smallest feasible one, and the spec rebuilds the network."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from dery.blocks import Block
from dery.flops import count_flops, count_parameters
from dery.plan import Planner
from dery.candidates import Budget, Pool, exhaustive, milp, random_search, search
from dery.search import load_partition, zoo_members
from dery.spec import build_network, load_spec, save_spec, spec_of
from tasks.errors import UserError
from tests.dery.conftest import compose_stage


@pytest.fixture(scope="module")
def setup(stages):
    partition, zoo = load_partition(stages["partition"])
    members = zoo_members(zoo)
    return partition, zoo, members, Planner(members, zoo["input_size"], 10)


def _blocks(members, picks):
    """Blocks by (member, first node, last node), stage positions 0..K-1."""
    return [Block(m, k, s, e) for k, (m, s, e) in enumerate(picks)]


# hand-picked candidates (free of the partition): CNN only, CNN -> ViT, and (rule off) ViT first
CASES = {
    "cnn": [("resnet", 0, 1), ("mobilenet", 3, 5), ("resnet", 4, 5), ("mobilenet", 9, 11)],
    "cnn_to_vit": [("mobilenet", 0, 2), ("resnet", 2, 3), ("vit", 2, 2), ("vit", 3, 3)],
    "vit_first": [("vit", 0, 0), ("resnet", 2, 5), ("mobilenet", 9, 9), ("vit", 3, 3)],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_counts_equal_the_built_network(setup, case):
    _, zoo, members, planner = setup
    plan = planner.plan(_blocks(members, CASES[case]))
    spec = spec_of(plan, members, zoo["input_size"], 10)
    net = build_network(spec).eval()
    flops, out = count_flops(net, torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 10)
    assert count_parameters(net) == plan.params and flops == plan.flops
    assert plan.new_params == count_parameters(net.stem) + count_parameters(net.adapters) + count_parameters(net.head)
    net.train()(torch.randn(4, 3, 32, 32)).sum().backward()   # trains end to end


def test_adapter_stride_follows_spatial_sizes(setup):
    _, _, members, planner = setup
    # resnet layer1.1 ends at 8x8 (32 px input, stride-4 stem); mobilenet blocks.2.0 expects 4x4
    plan = planner.plan(_blocks(members, [("resnet", 0, 1), ("mobilenet", 3, 5), ("resnet", 6, 6), ("resnet", 7, 7)]))
    adapter = plan.parts[1]
    assert members["resnet"].out_grid(1) == (8, 8) and members["mobilenet"].in_grid(3) == (4, 4)
    assert (adapter["kind"], adapter["stride"], adapter["in"], adapter["out"]) == ("conv", 2, 8, members["mobilenet"].in_channels(3))
    assert plan.shapes[1][1:] == [4, 4]
    # tokens -> tokens at the same grid: LayerNorm + Linear
    vit = planner.plan(_blocks(members, [("resnet", 0, 3), ("vit", 1, 1), ("vit", 2, 2), ("vit", 3, 3)]))
    assert [p["kind"] for p in vit.parts[1:-1]] == ["conv", "linear", "linear"]
    assert vit.parts[1]["stride"] == 1 and vit.parts[1]["dst"] == "tokens"   # resnet layer2.1: 4x4 = vit's 4x4 tokens


def test_exhaustive_and_milp_agree_and_hold_budgets(setup):
    partition, _, members, planner = setup
    pool = Pool(partition, members)
    everything, plans = exhaustive(pool, planner, Budget())
    assert len(plans) == sum(1 for _ in pool.candidates()) >= 2
    for candidate in itertools.product(*pool.by_stage):   # validity: one block per set, CNN first, no CNN after a ViT
        sets = [pool.set_of(b) for b in candidate]
        kinds = [pool.is_cnn(b) for b in candidate]
        assert pool.valid(candidate) == (len(set(sets)) == 4 and kinds[0] and kinds == sorted(kinds, reverse=True))
    budget = Budget(params=float(np.median([p.params for p in plans])))
    feasible, _ = exhaustive(pool, planner, budget)
    assert feasible and all(p.params <= budget.params for p in feasible)
    assert [p.params for p in feasible] == sorted((p.params for p in feasible), reverse=True)
    solved = milp(pool, planner, budget, limit=len(feasible) + 5)
    assert {tuple(p.blocks) for p in solved} == {tuple(p.blocks) for p in feasible}
    assert solved[0].params == feasible[0].params
    both = Budget(params=budget.params, flops=float(np.median([p.flops for p in feasible])))
    assert {tuple(p.blocks) for p in milp(pool, planner, both, 50)} == {tuple(p.blocks) for p in exhaustive(pool, planner, both)[0]}


def test_infeasible_budget_names_the_smallest_feasible(setup):
    partition, _, members, planner = setup
    pool = Pool(partition, members)
    smallest = min(p.params for p in exhaustive(pool, planner, Budget())[1])
    for mode in ("exhaustive", "milp"):
        with pytest.raises(UserError, match=f"smallest feasible network has {smallest:,} parameters.*budget.params={smallest}"):
            search(pool, planner, Budget(params=smallest - 1), mode, 10, 10**6, 10, 0)
    plans, info = search(pool, planner, Budget(params=smallest), "auto", 10, 10**6, 10, 0)
    assert info["mode"] == "exhaustive" and [p.params for p in plans] == [smallest]   # the bound is inclusive
    with pytest.raises(UserError, match="mode"):
        search(pool, planner, Budget(), "greedy", 10, 10, 10, 0)


def test_random_search_keeps_feasible_valid_candidates(setup):
    partition, _, members, planner = setup
    pool = Pool(partition, members)
    budget = Budget(params=float(np.median([p.params for p in exhaustive(pool, planner, Budget())[1]])))
    found = random_search(pool, planner, budget, 20, np.random.default_rng(0))
    assert found and all(pool.valid(p.blocks) and budget.admits(p.params, p.flops) for p in found)
    assert len({tuple(p.blocks) for p in found}) == len(found)


def test_search_stage_writes_a_spec_that_rebuilds_the_network(stages, tmp_path):
    from dery import search as stage

    budget = 3.0e5
    cfg = compose_stage("search", [f"partition={stages['partition']}", f"budget.params={budget}", "proxy.batches=2",
                                   "proxy.batch_size=8", "max_scored=4"], tmp_path)
    result = stage.compute(cfg, tmp_path)
    spec = load_spec(result["spec"])
    table = json.loads((tmp_path / "candidates.json").read_text())
    assert 1 <= len(table) <= 4 and spec["proxy"]["naswot"] == max(r["naswot"] for r in table)
    net = build_network(spec).eval()
    flops, _ = count_flops(net, torch.zeros(1, 3, 32, 32))
    assert count_parameters(net) == spec["params"] == result["chosen"]["params"] <= budget
    assert flops == spec["flops"]
    assert len({b["set"] for b in spec["blocks"]}) == 4                       # no duplicate set
    assert (tmp_path / "plots" / "architecture.png").is_file()
    assert result["kendall_tau"]["tau"] is None                                # random-init zoo: no accuracies
    again = tmp_path / "copy.yaml"
    assert load_spec(save_spec(spec, again)) == spec
    with pytest.raises(UserError, match="not a DeRy spec"):
        load_spec(stages["partition"] / "summary.json")
    with pytest.raises(UserError, match="model.spec is not set"):
        load_spec(None)
