"""The draw of the proxy-validation study (chain `dery_proxy_study`): which training-free score
predicts a reassembled network's trained accuracy?

Every feasible candidate under the budget is planned exactly, sorted by parameter count and
cut into `candidates` strata of equal size; one candidate is drawn uniformly from each
stratum (seeded), so the draw covers the feasible range of sizes. Each drawn candidate is
scored by every proxy of dery/proxies.py, and by `zoo_acc` (the parameter-weighted mean test
accuracy of the zoo members its blocks come from: free, label-aware through the zoo), on the
same class-stratified probe images, with the seconds each score costs (a forward pass is
charged to every score that needs it). The candidates' specs go to specs/cand_<i>.yaml, which
the chain's training stages train; dery/proxy_report.py then ranks the proxies.

    python -m dery.proxy_study partition=<dery.partition run dir> candidates=24 budget.params=2.5e6
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import tasks  # noqa: F401  (resolvers)
from dery.app import run_stage
from dery.candidates import Budget, Pool, exhaustive
from dery.plan import Plan, Planner
from dery.prefix_tree import candidate_features, candidate_naswot, candidate_network
from dery.probe import Probe
from dery.proxies import PROXIES, feature_score
from dery.search import load_partition, probe_labels, zoo_members
from dery.similarity import pick_device
from dery.spec import save_spec, spec_of
from dery.zoo import Member
from tasks.config.location import CONFIG_SOURCE
from tasks.errors import UserError
from tasks.io.files import write_text

SCORES = (*PROXIES, "zoo_acc")


def stratified_draw(plans: list[Plan], count: int, seed: int) -> tuple[list[int], list[list[int]]]:
    """Indices of `count` plans, one drawn uniformly from each of `count` equal strata of the
    plans sorted by parameter count, and each stratum's parameter range."""
    order = sorted(range(len(plans)), key=lambda i: (plans[i].params, plans[i].flops, i))
    rng = np.random.default_rng(seed)
    picks, ranges = [], []
    for stratum in np.array_split(np.asarray(order), count):
        picks.append(int(stratum[rng.integers(len(stratum))]))
        ranges.append([plans[int(stratum[0])].params, plans[int(stratum[-1])].params])
    return picks, ranges


def zoo_accuracy(plan: Plan, members: dict[str, Member]) -> float | None:
    """Parameter-weighted mean test accuracy of the members the plan's blocks come from."""
    weights, accuracies = [], []
    for b in plan.blocks:
        member = members[b.member]
        if member.accuracy is None:
            return None
        weights.append(sum(member.node_params[b.start : b.end + 1]))
        accuracies.append(member.accuracy)
    return float(np.average(accuracies, weights=weights))


def score_candidate(
    plan: Plan, members: dict[str, Member], zoo: dict[str, Any], batches, labels, cfg: DictConfig
) -> tuple[dict[str, float | None], dict[str, float]]:
    """(score, seconds) of every proxy for one candidate, scored alone."""
    scores: dict[str, float | None] = {}
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    fresh = Planner(members, zoo["input_size"], cfg.num_classes).plan(plan.blocks)  # costs counted from scratch
    seconds["params"] = seconds["flops"] = time.perf_counter() - start
    scores["params"], scores["flops"] = float(fresh.params), float(fresh.flops)
    net = candidate_network(plan, members, cfg.seed).to(batches[0].device)
    start = time.perf_counter()
    scores["naswot"] = candidate_naswot(net, batches, cfg.seed, cfg.proxy.hooks)
    seconds["naswot"] = time.perf_counter() - start
    start = time.perf_counter()
    features = candidate_features(net, batches, cfg.seed)
    forward = time.perf_counter() - start
    for name in ("knn", "logme"):
        start = time.perf_counter()
        scores[name] = feature_score(name, features, labels, cfg.proxy.knn_k)
        seconds[name] = forward + time.perf_counter() - start
    start = time.perf_counter()
    scores["zoo_acc"] = zoo_accuracy(plan, members)
    seconds["zoo_acc"] = time.perf_counter() - start
    return scores, seconds


def compute(cfg: DictConfig, out: Path) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    partition, zoo = load_partition(cfg.partition)
    members = zoo_members(zoo)
    budget = Budget(**OmegaConf.to_container(cfg.budget, resolve=True))
    pool = Pool(partition, members, cfg.topology_rule)
    planner = Planner(members, zoo["input_size"], cfg.num_classes)
    if pool.size() > cfg.enumerate_limit:
        raise UserError(
            f"The study plans every combination: {pool.size():,} is above enumerate_limit={cfg.enumerate_limit:,}. "
            "Raise enumerate_limit, or partition with a smaller K."
        )
    feasible, valid = exhaustive(pool, planner, budget)
    if len(feasible) < cfg.candidates:
        raise UserError(
            f"Only {len(feasible)} candidates fit the budget ({budget.describe()}), fewer than candidates="
            f"{cfg.candidates}. Lower candidates, or raise the budget."
        )
    picks, ranges = stratified_draw(feasible, cfg.candidates, cfg.seed)
    device = pick_device(cfg.device)
    count = cfg.proxy.batches * cfg.proxy.batch_size
    probe = Probe(cfg.data, "train", count, cfg.proxy.batch_size)
    batches = [x.to(device) for x in probe.batches()]
    labels = probe_labels(probe, sum(len(x) for x in batches))
    rows = []
    for i, index in enumerate(picks):
        plan = feasible[index]
        scores, seconds = score_candidate(plan, members, zoo, batches, labels, cfg)
        spec = spec_of(
            plan,
            members,
            zoo["input_size"],
            cfg.num_classes,
            pool.sets,
            {"proxy": scores, "budget": OmegaConf.to_container(cfg.budget), "study": {"candidate": i}},
        )
        path = save_spec(spec, out / "specs" / f"cand_{i:02d}.yaml")
        rows.append(
            {
                "candidate": i,
                "blocks": pool.label(plan.blocks),
                "params": plan.params,
                "flops": plan.flops,
                "stratum_params": ranges[i],
                "scores": scores,
                "seconds": seconds,
                "spec": str(path),
            }
        )
        print(
            f"cand_{i:02d} {' + '.join(pool.label(plan.blocks))}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in scores.items() if v is not None),
            flush=True,
        )
    write_text(out / "candidates.json", json.dumps({"candidates": rows}, indent=2))
    return {
        "candidates": str(out / "candidates.json"),
        "draw": {
            "seed": cfg.seed,
            "count": cfg.candidates,
            "valid": len(valid),
            "feasible": len(feasible),
            "budget": budget.describe(),
            "picked": [feasible[i].params for i in picks],
        },
        "probe": {"images": len(labels), "batches": len(batches), "fingerprint": probe.fingerprint()},
        "proxies": list(SCORES),
        "score_seconds": {k: float(sum(r["seconds"][k] for r in rows)) for k in SCORES},
    }


@hydra.main(version_base="1.3", config_path=CONFIG_SOURCE, config_name="dery/proxy_study")
def main(cfg: DictConfig) -> None:
    run_stage("proxy_study", cfg, compute)


def command() -> None:
    """`python -m dery.proxy_study`: the command line and config are checked first."""
    from tasks.run.launch import hydra_command

    hydra_command(main, "dery/proxy_study")


if __name__ == "__main__":
    command()
