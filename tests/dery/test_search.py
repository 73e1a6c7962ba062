"""Plans, budgets and the reassembly search: the counted parameters and FLOPs equal those of
the built network; the random search draws uniformly from the feasible set; the MILP finds
exactly the exhaustive feasible set on a zoo whose blocks see non-native sizes; an
infeasible budget names the smallest feasible one; the search stage keeps the candidate of
highest NASWOT (checked against scoring every candidate alone), reports the proxy's Kendall
tau, and its spec rebuilds the network."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from dery.blocks import Block
from dery.candidates import Budget, Pool, exhaustive, random_search, search
from dery.flops import count_flops
from dery.milp import milp
from dery.plan import Planner
from dery.prefix_tree import candidate_naswot, candidate_network
from dery.probe import Probe
from dery.search import kendall_tau, load_partition, zoo_members
from dery.spec import build_network, load_spec, save_spec, spec_of
from dery.zoo import load_zoo
from tasks.errors import UserError
from tasks.models.backbones import count_parameters
from tests.dery.conftest import compose_stage
from tests.dery.families import FAMILIES, stage_partition


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
    net.train()(torch.randn(4, 3, 32, 32)).sum().backward()  # trains end to end


def test_adapter_stride_follows_spatial_sizes(setup):
    _, _, members, planner = setup
    # resnet layer1.1 ends at 8x8 (32 px input, stride-4 stem); mobilenet blocks.2.0 expects 4x4
    plan = planner.plan(_blocks(members, [("resnet", 0, 1), ("mobilenet", 3, 5), ("resnet", 6, 6), ("resnet", 7, 7)]))
    adapter = plan.parts[1]
    assert members["resnet"].out_grid(1) == (8, 8) and members["mobilenet"].in_grid(3) == (4, 4)
    expected = ("conv", 2, 8, members["mobilenet"].in_channels(3))
    assert (adapter["kind"], adapter["stride"], adapter["in"], adapter["out"]) == expected
    assert plan.shapes[1][1:] == [4, 4]
    # tokens -> tokens at the same grid: LayerNorm + Linear
    vit = planner.plan(_blocks(members, [("resnet", 0, 3), ("vit", 1, 1), ("vit", 2, 2), ("vit", 3, 3)]))
    assert [p["kind"] for p in vit.parts[1:-1]] == ["conv", "linear", "linear"]
    assert vit.parts[1]["stride"] == 1 and vit.parts[1]["dst"] == "tokens"  # resnet layer2.1: 4x4 = vit's 4x4 tokens


def test_candidates_are_valid(setup):
    partition, _, members, planner = setup
    pool = Pool(partition, members)
    _, plans = exhaustive(pool, planner, Budget())
    assert len(plans) == sum(1 for _ in pool.candidates()) >= 2
    for candidate in itertools.product(*pool.by_stage):  # validity: one block per set, CNN first, no CNN after a ViT
        sets = [pool.set_of(b) for b in candidate]
        kinds = [pool.is_cnn(b) for b in candidate]
        assert pool.valid(candidate) == (len(set(sets)) == 4 and kinds[0] and kinds == sorted(kinds, reverse=True))


@pytest.fixture(scope="module")
def stage_sets(setup):
    """The tiny zoo with same-stage sets: 30 valid candidates (a CNN prefix of length L = 1..4 of
    resnet/mobilenet blocks, then ViT blocks: 2 + 4 + 8 + 16)."""
    _, _, members, planner = setup
    return Pool(stage_partition(members), members), planner


def test_random_search_draws_uniformly_from_the_feasible_set(stage_sets):
    pool, planner = stage_sets
    _, plans = exhaustive(pool, planner, Budget())
    assert len(plans) == 30
    budget = Budget(params=float(np.median([p.params for p in plans])))
    feasible = {tuple(p.blocks) for p in exhaustive(pool, planner, budget)[0]}
    assert len(feasible) == 15
    for enumerate_limit in (10**6, 0):  # the enumerated feasible set, and rejection sampling from all combinations
        counts = dict.fromkeys(feasible, 0)
        for seed in range(300):
            drawn, _ = random_search(pool, planner, budget, 5, np.random.default_rng(seed), enumerate_limit)
            assert len(drawn) == len({tuple(p.blocks) for p in drawn}) == 5  # 5 distinct feasible networks
            for plan in drawn:
                counts[tuple(plan.blocks)] += 1
        # each feasible network is drawn with probability 5/15: 100 of 300 (sd 8.2)
        assert all(60 <= c <= 140 for c in counts.values()), (enumerate_limit, sorted(counts.values()))
    everything, _ = random_search(pool, planner, budget, 500, np.random.default_rng(0))
    assert {tuple(p.blocks) for p in everything} == feasible  # fewer than N feasible: all of them


@pytest.fixture(scope="module")
def non_native():
    """ResNet-18 + RegNetY-200MF at 64 px, same-stage sets: a RegNet prefix hands a ResNet block
    a 2 x 2 map where it saw 16 x 16 in its own network (its FLOPs are 64 times smaller)."""
    zoo = {"r": {"arch": "resnet18", "weights": "random"}, "g": {"arch": "regnety_002", "weights": "random"}}
    members = load_zoo(zoo, (3, 64, 64))
    return Pool(stage_partition(members), members), Planner(members, (3, 64, 64), 10)


def test_milp_is_exact_where_blocks_see_non_native_sizes(non_native):
    pool, planner = non_native
    _, plans = exhaustive(pool, planner, Budget())
    assert len(plans) == 16
    plan = planner.plan([next(b for b in pool.by_stage[k] if b.member == m) for k, m in enumerate("grrr")])
    assert plan.shapes[1] == [64, 2, 2] and pool.members["r"].in_shapes[plan.blocks[1].start] == (64, 16, 16)
    for key, values in (("flops", sorted({p.flops for p in plans})), ("params", sorted({p.params for p in plans}))):
        for value in values:  # every budget at which the feasible set changes
            budget = Budget(**{key: float(value)})
            feasible, _ = exhaustive(pool, planner, budget)
            solved = milp(pool, planner, budget, limit=len(feasible) + 5)
            assert {tuple(p.blocks) for p in solved} == {tuple(p.blocks) for p in feasible}, (key, value)
            assert [p.params for p in solved] == sorted((p.params for p in solved), reverse=True)
    smallest = milp(pool, planner, Budget(), 1, minimise=True)[0]
    assert smallest.params == min(p.params for p in plans)


def test_infeasible_budget_names_the_smallest_feasible(setup):
    partition, _, members, planner = setup
    pool = Pool(partition, members)
    smallest = min(p.params for p in exhaustive(pool, planner, Budget())[1])
    for mode in ("random", "exhaustive", "milp"):
        message = f"smallest feasible network has {smallest:,} parameters.*budget.params={smallest}"
        with pytest.raises(UserError, match=message):
            search(pool, planner, Budget(params=smallest - 1), mode, 10, 0)
        plans, info = search(pool, planner, Budget(params=smallest), mode, 10, 0)
        assert info["mode"] == mode and [p.params for p in plans] == [smallest]  # the bound is inclusive
    with pytest.raises(UserError, match="search mode 'auto' is unknown"):
        search(pool, planner, Budget(), "auto", 10, 0)
    with pytest.raises(UserError, match="above enumerate_limit=10"):
        search(pool, planner, Budget(), "exhaustive", 10, 0, enumerate_limit=10)


def test_search_stage_keeps_the_best_naswot_and_its_spec_rebuilds_the_network(stages, tmp_path):
    from dery import search as stage

    budget = 3.0e5
    cfg = compose_stage(
        "search",
        [
            f"partition={stages['partition']}",
            f"budget.params={budget}",
            "proxy.batches=2",
            "proxy.batch_size=8",
            f"cache_dir={tmp_path / 'cache'}",
        ],
        tmp_path,
    )
    assert cfg.mode == "random" and cfg.random_candidates == 500  # the paper's search is the default
    result = stage.compute(cfg, tmp_path)
    spec = load_spec(result["spec"])
    table = json.loads((tmp_path / "candidates.json").read_text())
    # every feasible candidate (fewer than 500), each scored as if alone
    partition, zoo = load_partition(stages["partition"])
    members = zoo_members(zoo)
    pool, planner = Pool(partition, members), Planner(members, zoo["input_size"], 10)
    feasible = exhaustive(pool, planner, Budget(params=budget))[0]
    assert sorted(r["blocks"] for r in table) == sorted(pool.label(p.blocks) for p in feasible)
    batches = list(Probe(cfg.data, "train", 16, 8).batches())
    alone = {
        tuple(pool.label(p.blocks)): candidate_naswot(candidate_network(p, members, 0), batches, 0) for p in feasible
    }
    assert {tuple(r["blocks"]): r["naswot"] for r in table} == alone
    best = max(alone, key=alone.get)
    assert [f"{b['member']}[{b['stage']}]" for b in spec["blocks"]] == list(best)
    assert spec["proxy"]["naswot"] == alone[best]
    net = build_network(spec).eval()
    flops, _ = count_flops(net, torch.zeros(1, 3, 32, 32))
    assert count_parameters(net) == spec["params"] == result["chosen"]["params"] <= budget
    assert flops == spec["flops"]
    assert len({b["set"] for b in spec["blocks"]}) == 4  # no duplicate set
    assert (tmp_path / "plots" / "architecture.png").is_file()
    again = tmp_path / "copy.yaml"
    assert load_spec(save_spec(spec, again)) == spec
    with pytest.raises(UserError, match="not a DeRy spec"):
        load_spec(stages["partition"] / "summary.json")
    with pytest.raises(UserError, match="model.spec is not set"):
        load_spec(None)


def test_kendall_tau_of_the_proxy_against_member_accuracy():
    """Members of three families (Swin with 16 windows in stage 0, EfficientNet's SiLU blocks):
    tau follows the accuracies' order against the NASWOT ranking: 1, -1, and 1/3 after one swap."""
    specs = {
        name: {"arch": FAMILIES[name][0], "kwargs": {**FAMILIES[name][1], "num_classes": 10}, "weights": "random"}
        for name in ("resnet", "swin", "efficientnet")
    }
    members = load_zoo(specs, (3, 32, 32))
    batches = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    for member in members.values():
        member.accuracy = 0.5
    scores = {n: r["naswot"] for n, r in kendall_tau(members, batches, seed=0)["members"].items()}
    assert len(set(scores.values())) == 3
    ranked = sorted(scores, key=scores.get)  # lowest NASWOT first
    for accuracies, tau in (((0.1, 0.2, 0.3), 1.0), ((0.3, 0.2, 0.1), -1.0), ((0.2, 0.1, 0.3), 1 / 3)):
        for name, accuracy in zip(ranked, accuracies):
            members[name].accuracy = accuracy
        result = kendall_tau(members, batches, seed=0)
        assert result["tau"] == pytest.approx(tau, abs=1e-12)
        assert {n: r["naswot"] for n, r in result["members"].items()} == scores  # seeded: the same scores
    members["resnet"].accuracy = members["swin"].accuracy = None
    assert kendall_tau(members, batches)["tau"] is None and "at least two" in kendall_tau(members, batches)["note"]
