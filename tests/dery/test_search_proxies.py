"""`proxy.name` in every search mode on the tiny zoo: additive scores (params, flops) are read
from the plans and maximised exactly by the MILP; feature scores (knn, logme) from the prefix
tree equal each candidate scored alone; an unknown name stops in the typed preflight."""

from __future__ import annotations

import json

import pytest

from dery.candidates import Budget, Pool, exhaustive
from dery.plan import Planner
from dery.prefix_tree import candidate_features, candidate_network
from dery.probe import Probe
from dery.proxies import feature_score
from dery.search import load_partition, probe_labels, zoo_members
from tasks.errors import UserError
from tasks.run.preflight import preflight
from tests.dery.conftest import compose_stage

CONF = "pkg://tasks.conf"


def _run(stages, tmp_path, name: str, mode: str, budget: float = 3.0e5):
    from dery import search as stage

    run_dir = tmp_path / f"{name}-{mode}"
    overrides = [
        f"partition={stages['partition']}",
        f"budget.params={budget}",
        f"proxy.name={name}",
        f"mode={mode}",
        "max_scored=3",
        "proxy.batches=2",
        "proxy.batch_size=8",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    cfg = compose_stage("search", overrides, run_dir)
    return cfg, stage.compute(cfg, run_dir), json.loads((run_dir / "candidates.json").read_text())


def _feasible(stages, budget: float = 3.0e5):
    partition, zoo = load_partition(stages["partition"])
    members = zoo_members(zoo)
    pool, planner = Pool(partition, members), Planner(members, zoo["input_size"], 10)
    return pool, members, exhaustive(pool, planner, Budget(params=budget))[0]


@pytest.mark.parametrize("name", ["params", "flops"])
def test_additive_proxies_pick_the_exact_maximum_in_every_mode(stages, tmp_path, name):
    pool, _, feasible = _feasible(stages)
    top = max(getattr(p, name) for p in feasible)
    for mode in ("random", "exhaustive", "milp"):
        _, result, table = _run(stages, tmp_path, name, mode)
        assert result["chosen"][name] == top == result["chosen"]["params" if name == "params" else "flops"], mode
        assert result["search"]["proxy"]["forward"] is False and result["chosen"]["proxy"] == name
        assert {r[name] for r in table} <= {getattr(p, name) for p in feasible}
    # the MILP maximises the proxy's own cost: its 3 candidates are the 3 largest in it
    _, _, table = _run(stages, tmp_path, name, "milp")
    assert (
        sorted((r[name] for r in table), reverse=True) == sorted((getattr(p, name) for p in feasible), reverse=True)[:3]
    )


@pytest.mark.parametrize("name", ["knn", "logme"])
def test_feature_proxies_from_the_tree_equal_each_candidate_alone(stages, tmp_path, name):
    pool, members, feasible = _feasible(stages)
    cfg, result, table = _run(stages, tmp_path, name, "exhaustive")
    probe = Probe(cfg.data, "train", 16, 8)
    batches = list(probe.batches())
    labels = probe_labels(probe, 16)
    assert labels.tolist() == [int(probe.labels[i]) for i in probe.indices[:16]]
    alone = {
        tuple(pool.label(p.blocks)): feature_score(
            name, candidate_features(candidate_network(p, members, 0), batches, 0), labels
        )
        for p in feasible
    }
    assert {tuple(r["blocks"]): r[name] for r in table} == pytest.approx(alone, abs=1e-12)
    best = max(alone, key=alone.get)
    assert result["chosen"]["blocks"] == list(best) and result["chosen"][name] == pytest.approx(alone[best])
    assert result["search"]["proxy"]["evaluated_stages"] < len(feasible) * 4  # prefixes shared
    for mode in ("random", "milp"):
        _, other, _ = _run(stages, tmp_path, name, mode)
        assert other["chosen"]["proxy"] == name and other["search"]["proxy"]["name"] == name


def test_an_unknown_proxy_stops_in_the_preflight(tmp_path):
    with pytest.raises(UserError, match=r"proxy.name='synflow'.*naswot.*params.*flops.*knn.*logme"):
        preflight(["dery.search", "partition=/x", "proxy.name=synflow"], CONF, "dery/search")
