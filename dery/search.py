"""Stage 3: reassembly search. The feasible candidates (dery/candidates.py: exhaustive,
milp, or random; `auto` is exhaustive up to `exhaustive_limit` combinations, milp beyond)
under budgets on the parameters and FLOPs of the exact network that will be built (stem,
adapters and head for the class count included) are ranked by NASWOT, the best
`max_scored` of them. The winner is written as spec.yaml, which
`python train.py experiment=dery_digits model.spec=<spec.yaml>` trains. The NASWOT of the
zoo members against their test accuracy (Kendall tau) is reported beside it.

    python -m dery.search partition=<dery.partition run dir> budget.params=2e6
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

import tasks  # noqa: F401  (resolvers)
from dery.app import read_stage, run_stage
from dery.candidates import Budget, Pool, search
from dery.plan import Plan, Planner
from dery.plots import plot_architecture, plot_candidates
from dery.probe import Probe
from dery.proxy import naswot
from dery.spec import save_spec, spec_of
from dery.stitch import ReassembledNet, make_part, node_block
from dery.zoo import Member, load_zoo


def network_of(plan: Plan, members: dict[str, Member]) -> ReassembledNet:
    blocks = [node_block(members[b.member].model, members[b.member].nodes[b.start:b.end + 1]) for b in plan.blocks]
    return ReassembledNet(make_part(plan.parts[0]), blocks, [make_part(p) for p in plan.parts[1:-1]], make_part(plan.parts[-1]),
                          plan.parts[0]["layout"])


def proxy_scores(plans: list[Plan], members: dict[str, Member], batches: list[torch.Tensor], seed: int) -> list[float]:
    scores = []
    for plan in tqdm(plans, desc="NASWOT", unit="cand", disable=None):
        torch.manual_seed(seed)  # the same random stem/adapters/head for every candidate's draw
        scores.append(naswot(network_of(plan, members), batches))
    return scores


def kendall_tau(members: dict[str, Member], batches: list[torch.Tensor]) -> dict[str, Any]:
    """NASWOT of every zoo member (its own trained network) against its test accuracy."""
    from scipy.stats import kendalltau

    rated = {n: m for n, m in members.items() if m.accuracy is not None}
    scores = {n: naswot(copy.deepcopy(m.model), batches) for n, m in rated.items()}
    result: dict[str, Any] = {"members": {n: {"naswot": scores[n], "accuracy": rated[n].accuracy} for n in rated}}
    if len(rated) < 2:
        result["tau"], result["note"] = None, "needs at least two members with a known accuracy"
        return result
    tau, p_value = kendalltau([scores[n] for n in rated], [rated[n].accuracy for n in rated])
    result["tau"], result["p_value"] = (None if np.isnan(tau) else float(tau)), (None if np.isnan(p_value) else float(p_value))
    return result


def load_partition(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    summary = read_stage(run_dir, "partition", "python -m dery.partition similarity=<dery.similarity run dir>")
    partition = json.loads(Path(summary["partition"]).read_text())
    zoo = json.loads(Path(partition["zoo"]).read_text())
    return partition, zoo


def zoo_members(zoo: dict[str, Any]) -> dict[str, Member]:
    keep = ("arch", "kwargs", "weights", "nodes", "layout", "accuracy")
    return load_zoo({n: {k: m[k] for k in keep} for n, m in zoo["members"].items()}, tuple(zoo["input_size"]))


def compute(cfg: DictConfig, out: Path) -> dict[str, Any]:
    partition, zoo = load_partition(cfg.partition)
    members = zoo_members(zoo)
    budget = Budget(**OmegaConf.to_container(cfg.budget, resolve=True))
    pool = Pool(partition, members, cfg.topology_rule)
    planner = Planner(members, zoo["input_size"], cfg.num_classes)
    plans, info = search(pool, planner, budget, cfg.mode, cfg.max_scored, cfg.exhaustive_limit, cfg.random_candidates, cfg.seed)
    probe = Probe(cfg.data, "train", cfg.proxy.batches * cfg.proxy.batch_size, cfg.proxy.batch_size)
    batches = list(probe.batches())
    start = time.perf_counter()
    scores = proxy_scores(plans, members, batches, cfg.seed)
    info["proxy_s"] = time.perf_counter() - start
    best = int(np.argmax(scores))
    tau = kendall_tau(members, batches)
    sets = pool.sets
    spec = spec_of(plans[best], members, zoo["input_size"], cfg.num_classes, sets,
                   {"proxy": {"naswot": scores[best]}, "budget": OmegaConf.to_container(cfg.budget),
                    "search": {**info, "scored": len(plans), "partition_run": str(cfg.partition)}})
    spec_path = save_spec(spec, out / "spec.yaml")
    table = [{"blocks": pool.label(p.blocks), "params": p.params, "flops": p.flops, "naswot": s} for p, s in zip(plans, scores)]
    (out / "candidates.json").write_text(json.dumps(table, indent=2))
    plots = [str(plot_architecture(spec, out / "plots" / "architecture.png"))]
    plots.append(str(plot_candidates(table, best, out / "plots" / "candidates.png")))
    return {"spec": str(spec_path), "candidates": str(out / "candidates.json"), "plots": plots,
            "chosen": {"blocks": pool.label(plans[best].blocks), "params": spec["params"], "flops": spec["flops"],
                       "new_params": spec["new_params"], "naswot": scores[best]},
            "budget": OmegaConf.to_container(cfg.budget), "search": info, "kendall_tau": tau}


@hydra.main(version_base="1.3", config_path="../conf", config_name="dery/search")
def main(cfg: DictConfig) -> None:
    run_stage("search", cfg, compute)


if __name__ == "__main__":
    main()
