"""The proxy study's draw (strata over parameter count, seeded) and its report on a hand-made
chain dir whose orderings are known: a proxy that orders the candidates as their accuracy has
tau = rho = 1 and no regret, a reversed one -1 and the whole accuracy range as regret."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from dery.proxy_report import main, report
from dery.proxy_study import stratified_draw
from tasks.errors import UserError
from tasks.run.summary import write_summary

ACC = [0.70, 0.75, 0.80, 0.85, 0.90, 0.95]


def _chain(tmp_path, interrupted: int | None = None):
    rows = []
    for i, acc in enumerate(ACC):
        scores = {"good": float(i), "bad": float(-i), "flat": 1.0}
        rows.append(
            {
                "candidate": i,
                "blocks": [],
                "params": 1000 + i,
                "flops": 1,
                "scores": scores,
                "seconds": {"good": 0.5, "bad": 1.5, "flat": 0.0},
            }
        )
        seeds = [0, 1, 2] if i == 2 else [0]
        for seed in seeds:
            summary = {"test": {"test/acc": acc + 0.01 * (seed - 1) * (i == 2)}}
            if i == interrupted:
                summary["status"] = "interrupted"
            (tmp_path / f"cand_{i:02d}" / f"seed{seed}").mkdir(parents=True)
            (tmp_path / f"cand_{i:02d}" / f"seed{seed}" / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "draw").mkdir()
    (tmp_path / "draw" / "candidates.json").write_text(json.dumps({"candidates": rows}))
    write_summary(
        tmp_path / "draw" / "summary.json",
        {
            "candidates": str(tmp_path / "draw" / "candidates.json"),
            "draw": {"seed": 0},
            "proxies": ["good", "bad", "flat"],
        },
    )


def test_report_of_known_orderings(tmp_path):
    _chain(tmp_path)
    result = report(tmp_path)
    good, bad = result["proxies"]["good"], result["proxies"]["bad"]
    assert good["kendall_tau"] == pytest.approx(1.0) and good["spearman_rho"] == pytest.approx(1.0)
    assert good["top1_regret"] == 0.0 and good["top5_hit_rate"] == 1.0 and good["seconds"] == 0.5
    assert bad["kendall_tau"] == pytest.approx(-1.0) and bad["top1_regret"] == pytest.approx(0.25)
    assert bad["top5_hit_rate"] == pytest.approx(4 / 5)  # 6 candidates: the top 5 share 4
    flat = result["proxies"]["flat"]  # every candidate tied: no rank correlation, the mean as the pick
    assert flat["top1_regret"] == pytest.approx(0.95 - 0.825) and flat["kendall_tau"] != flat["kendall_tau"]
    # cand_02: seeds 0.79, 0.80, 0.81 -> mean 0.80, std 0.01
    assert result["seed_noise"] == {"candidates": 1, "mean_std": pytest.approx(0.01)}
    table = (tmp_path / "proxy_table.md").read_text()
    assert "| good | +1.000 |" in table and "| bad | -1.000 |" in table and "| flat | – | – | – |" in table
    assert (tmp_path / "plots" / "proxy_good.png").is_file()


def test_an_interrupted_run_is_not_a_result_and_bad_input_is_named(tmp_path):
    _chain(tmp_path, interrupted=5)
    assert [r["candidate"] for r in report(tmp_path)["candidates"]] == [0, 1, 2, 3, 4]
    with pytest.raises(UserError, match="has no draw/summary.json"):
        report(tmp_path / "cand_00")
    with pytest.raises(UserError, match="unknown argument"):
        main(["chains=/x"])


def test_stratified_draw_takes_one_from_each_stratum_seeded():
    plans = [SimpleNamespace(params=p, flops=0) for p in [50, 10, 40, 20, 30, 60, 80, 70]]
    picks, ranges = stratified_draw(plans, 4, seed=0)
    assert ranges == [[10, 20], [30, 40], [50, 60], [70, 80]]
    assert [plans[i].params for i in picks] in [
        [a, b, c, d] for a in (10, 20) for b in (30, 40) for c in (50, 60) for d in (70, 80)
    ]
    assert stratified_draw(plans, 4, seed=0) == (picks, ranges)
    assert {tuple(stratified_draw(plans, 4, seed=s)[0]) for s in range(20)} != {tuple(picks)}  # the seed matters


def test_draw_stage_scores_each_candidate_as_the_search_would(stages, tmp_path):
    """The study's draw on the tiny zoo: one candidate per parameter stratum, each spec saved,
    and every forward-pass score equal to the search's prefix tree on the same probe."""
    from dery import proxy_study
    from dery.candidates import Budget, Pool, exhaustive
    from dery.plan import Planner
    from dery.prefix_tree import PrefixTree
    from dery.probe import Probe
    from dery.search import load_partition, probe_labels, zoo_members
    from dery.spec import load_spec
    from tests.dery.conftest import compose_stage

    overrides = [f"partition={stages['partition']}", "candidates=3", "budget.params=null", "proxy.batches=2"]
    overrides += ["proxy.batch_size=8"]
    cfg = compose_stage("proxy_study", overrides, tmp_path)
    result = proxy_study.compute(cfg, tmp_path)
    rows = json.loads((tmp_path / "candidates.json").read_text())["candidates"]
    partition, zoo = load_partition(stages["partition"])
    members = zoo_members(zoo)
    pool, planner = Pool(partition, members), Planner(members, zoo["input_size"], 10)
    feasible = exhaustive(pool, planner, Budget())[0]
    picks, ranges = proxy_study.stratified_draw(feasible, 3, 0)
    assert [r["blocks"] for r in rows] == [pool.label(feasible[i].blocks) for i in picks]
    assert [r["stratum_params"] for r in rows] == ranges and result["draw"]["feasible"] == len(feasible)
    probe = Probe(cfg.data, "train", 16, 8)
    batches = list(probe.batches())
    labels = probe_labels(probe, 16)
    plans = [feasible[i] for i in picks]
    for name in ("naswot", "knn", "logme"):
        tree = PrefixTree(members, batches, 0, "default", name, labels if name != "naswot" else None)
        assert tree.scores(plans, progress=False) == pytest.approx([r["scores"][name] for r in rows], abs=1e-12)
    for row, plan in zip(rows, plans):
        assert row["scores"]["params"] == plan.params and row["scores"]["flops"] == plan.flops
        assert row["scores"]["zoo_acc"] is None  # the tiny zoo is untrained: no accuracies
        assert load_spec(row["spec"])["params"] == plan.params
        assert set(row["seconds"]) == set(proxy_study.SCORES)


def test_the_draw_stage_is_checked_before_it_runs():
    from tasks.run.preflight import preflight

    with pytest.raises(UserError, match=r"candidates=1 is out of range"):
        preflight(["dery.proxy_study", "partition=/x", "candidates=1"], "pkg://tasks.conf", "dery/proxy_study")
    with pytest.raises(UserError, match=r"proxy.knn_k=0 is out of range"):
        preflight(["dery.proxy_study", "partition=/x", "proxy.knn_k=0"], "pkg://tasks.conf", "dery/proxy_study")
