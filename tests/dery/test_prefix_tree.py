"""The prefix tree scores every candidate exactly as scoring it alone would (also with Swin
blocks and stochastic depth), evaluates each shared prefix once, and its on-disk cache
answers a repeated search without a forward, keyed by what changes a score."""

from __future__ import annotations

import json

import torch

from dery.candidates import Budget, Pool, exhaustive
from dery.plan import Planner
from dery.prefix_tree import PrefixTree, ScoreCache, candidate_naswot, candidate_network
from dery.zoo import load_zoo
from tests.dery.conftest import compose_stage
from tests.dery.families import FAMILIES, stage_partition


def _batches(count: int = 2, size: int = 8) -> list[torch.Tensor]:
    return [torch.randn(size, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(count)]


def _prefixes(plans) -> int:
    """Distinct block prefixes of length 1..K, plus one head per candidate."""
    K = len(plans[0].blocks)
    return sum(len({tuple(p.blocks[:k]) for p in plans}) for k in range(1, K + 1)) + len(plans)


def test_tree_equals_each_candidate_alone_with_swin_and_drop_path():
    # timm's Swin has drop_path_rate 0.1: stochastic depth is on in NASWOT's train mode; 2 x 2
    # windows, so Swin blocks fed by a ResNet block run on several windows
    specs = {
        name: {"arch": FAMILIES[name][0], "kwargs": {**FAMILIES[name][1], "num_classes": 10}, "weights": "random"}
        for name in ("resnet", "swin")
    }
    specs["swin"]["kwargs"]["window_size"] = 2
    members = load_zoo(specs, (3, 32, 32))
    pool, planner = Pool(stage_partition(members), members), Planner(members, (3, 32, 32), 10)
    _, plans = exhaustive(pool, planner, Budget())
    # a ResNet prefix of 1..4 blocks, then Swin blocks
    assert sorted("".join(b.member[0] for b in p.blocks) for p in plans) == ["rrrr", "rrrs", "rrss", "rsss"]
    batches = _batches()
    tree = PrefixTree(members, batches, seed=3)
    scores = tree.scores(plans, progress=False)
    windows = []
    alone = []
    for plan in plans:
        net = candidate_network(plan, members, 3)
        for module in net.modules():
            if type(module).__name__ == "WindowAttention":
                module.register_forward_hook(lambda m, a, out: windows.append(out.shape[0] // 8))
        alone.append(candidate_naswot(net, batches, 3))
    assert scores == alone and max(windows) == 4
    assert tree.evaluated_stages == _prefixes(plans) < len(plans) * 5


def test_cache_answers_a_repeated_search_and_is_keyed_by_its_inputs(stages, tmp_path):
    from dery import search as stage

    overrides = [f"partition={stages['partition']}", "proxy.batches=1", "proxy.batch_size=8", f"cache_dir={tmp_path}"]
    first = stage.compute(compose_stage("search", overrides, tmp_path / "a"), tmp_path / "a")
    assert first["search"]["proxy"]["cached"] == 0 and first["search"]["proxy"]["evaluated_stages"] > 0
    again = stage.compute(compose_stage("search", overrides, tmp_path / "b"), tmp_path / "b")
    assert again["search"]["proxy"]["cached"] == again["search"]["scored"]
    assert again["search"]["proxy"]["evaluated_stages"] == 0
    assert again["search"]["proxy"]["cache"] == first["search"]["proxy"]["cache"]
    tables = [json.loads((tmp_path / run / "candidates.json").read_text()) for run in ("a", "b")]
    assert tables[0] == tables[1]
    for change in ("seed=1", "proxy.hooks=original", "proxy.batch_size=4", "num_classes=7"):
        other = stage.compute(compose_stage("search", overrides + [change], tmp_path / change), tmp_path / change)
        assert other["search"]["proxy"]["cache"] != first["search"]["proxy"]["cache"], change
        assert other["search"]["proxy"]["cached"] == 0, change


def test_tree_scores_only_what_the_cache_lacks(stages, tmp_path):
    from dery.search import load_partition, zoo_members

    partition, zoo = load_partition(stages["partition"])
    members = zoo_members(zoo)
    pool, planner = Pool(partition, members), Planner(members, zoo["input_size"], 10)
    _, plans = exhaustive(pool, planner, Budget())
    batches = _batches(1)
    cache = ScoreCache(tmp_path / "scores.json")
    full = PrefixTree(members, batches, 0).scores(plans, cache, progress=False)
    cache.scores.pop(next(iter(cache.scores)))
    tree = PrefixTree(members, batches, 0)
    assert tree.scores(plans, cache, progress=False) == full
    assert tree.evaluated_stages == len(plans[0].blocks) + 1  # one candidate: its K stages and its head
    assert json.loads((tmp_path / "scores.json").read_text()) == cache.scores
