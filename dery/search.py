"""Stage 3: reassembly search. Feasible candidates under budgets on the parameters and
FLOPs of the exact network that will be built (stem, adapters and head for the class count
included) are scored by the proxy `proxy.name` (NASWOT, the paper's, by default; params,
flops, knn, logme: dery/proxies.py) and the best is kept (dery/candidates.py): `random`,
the paper's search and the default, scores `random_candidates` (500) drawn uniformly from
the feasible set; `exhaustive` scores every feasible candidate; `milp` the `max_scored`
largest (in FLOPs when the proxy is flops, else in parameters). Forward-pass scores come
from a prefix tree that evaluates every shared prefix once, cached on disk
(dery/prefix_tree.py); additive ones (params, flops) are read from the plans. The winner is written as spec.yaml, which
`python train.py experiment=dery_digits model.spec=<spec.yaml>` trains. The NASWOT of the
zoo members against their test accuracy (Kendall tau) is reported beside it.

    python -m dery.search partition=<dery.partition run dir> budget.params=2e6
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import tasks  # noqa: F401  (resolvers)
from dery.app import read_stage, run_stage
from dery.candidates import Budget, Pool, search
from dery.plan import Planner
from dery.plots import plot_architecture, plot_candidates
from dery.prefix_tree import PrefixTree, ScoreCache, candidate_key
from dery.probe import Probe
from dery.proxies import ADDITIVE, PROXIES, additive_score
from dery.proxy import HOOK_SETS, naswot
from dery.similarity import pick_device
from dery.spec import save_spec, spec_of
from dery.zoo import Member, load_zoo
from tasks.config.location import CONFIG_SOURCE
from tasks.errors import UserError
from tasks.io.files import read_json, write_text

CACHE_VERSION = 1


def kendall_tau(
    members: dict[str, Member], batches: list[torch.Tensor], seed: int = 0, hooks: str = "default"
) -> dict[str, Any]:
    """NASWOT of every zoo member (its own trained network) against its test accuracy."""
    from scipy.stats import kendalltau

    rated = {n: m for n, m in members.items() if m.accuracy is not None}
    scores = {}
    for name, member in rated.items():
        torch.manual_seed(seed)
        scores[name] = naswot(copy.deepcopy(member.model).to(batches[0].device), batches, hooks)
    result: dict[str, Any] = {"members": {n: {"naswot": scores[n], "accuracy": rated[n].accuracy} for n in rated}}
    if len(rated) < 2:
        result["tau"], result["note"] = None, "needs at least two members with a known accuracy"
        return result
    tau, p_value = kendalltau([scores[n] for n in rated], [rated[n].accuracy for n in rated])
    result["tau"] = None if np.isnan(tau) else float(tau)
    result["p_value"] = None if np.isnan(p_value) else float(p_value)
    return result


def score_cache_path(cfg: DictConfig, zoo: dict[str, Any], probe: Probe, device: torch.device) -> Path:
    """The cache file of a forward-pass proxy's scores: keyed by the zoo, the probe images, every proxy setting and the
    device type (GPU kernels round differently)."""
    keep = ("arch", "kwargs", "fingerprint", "nodes", "layout")
    payload = {
        "v": CACHE_VERSION,
        "members": {n: {k: m.get(k) for k in keep} for n, m in zoo["members"].items()},
        "input": zoo["input_size"],
        "num_classes": cfg.num_classes,
        "probe": probe.fingerprint(),
        "proxy": OmegaConf.to_container(cfg.proxy, resolve=True),
        "seed": cfg.seed,
        "device": device.type,
    }
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return Path(cfg.cache_dir).expanduser() / f"{cfg.proxy.name}-{key}.json"


def load_partition(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    summary = read_stage(run_dir, "partition", "python -m dery.partition similarity=<dery.similarity run dir>")
    partition = read_json(summary["partition"], "The partition run's partition.json")
    zoo = read_json(partition["zoo"], "The similarity run's zoo.json")
    return partition, zoo


def zoo_members(zoo: dict[str, Any]) -> dict[str, Member]:
    keep = ("arch", "kwargs", "weights", "nodes", "layout", "accuracy")
    return load_zoo({n: {k: m[k] for k in keep} for n, m in zoo["members"].items()}, tuple(zoo["input_size"]))


def probe_labels(probe: Probe, count: int) -> torch.Tensor:
    """The labels of the probe's first `count` images, in the order its batches hold them."""
    return probe.labels[torch.as_tensor(probe.indices[:count], dtype=torch.long)]


def proxy_scores(
    cfg: DictConfig, plans: list, members: dict[str, Member], zoo: dict[str, Any], probe: Probe, batches, device
) -> tuple[list[float], dict[str, Any]]:
    """The proxy's score of every plan, and how it was computed."""
    name = cfg.proxy.name
    start = time.perf_counter()
    if name in ADDITIVE:
        scores = [additive_score(name, p) for p in plans]
        return scores, {"name": name, "seconds": time.perf_counter() - start, "forward": False}
    cache = ScoreCache(score_cache_path(cfg, zoo, probe, device) if cfg.cache else None)
    cached = sum(1 for p in plans if candidate_key(p.blocks) in cache.scores)
    labels = probe_labels(probe, sum(len(x) for x in batches))
    tree = PrefixTree(members, batches, cfg.seed, cfg.proxy.hooks, name, labels, cfg.proxy.knn_k)
    scores = tree.scores(plans, cache)
    return scores, {
        "name": name,
        "seconds": time.perf_counter() - start,
        "cache": str(cache.path),
        "cached": cached,
        "evaluated_stages": tree.evaluated_stages,
        "hooks": cfg.proxy.hooks,
    }


def compute(cfg: DictConfig, out: Path) -> dict[str, Any]:
    if cfg.proxy.hooks not in HOOK_SETS:
        raise UserError(f"proxy.hooks='{cfg.proxy.hooks}' is unknown; use one of {list(HOOK_SETS)}.")
    if cfg.proxy.name not in PROXIES:
        raise UserError(f"proxy.name='{cfg.proxy.name}' is unknown; use one of {list(PROXIES)}.")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    name = cfg.proxy.name
    partition, zoo = load_partition(cfg.partition)
    members = zoo_members(zoo)
    budget = Budget(**OmegaConf.to_container(cfg.budget, resolve=True))
    pool = Pool(partition, members, cfg.topology_rule)
    planner = Planner(members, zoo["input_size"], cfg.num_classes)
    count = cfg.random_candidates if cfg.mode == "random" else cfg.max_scored
    objective = name if name in ADDITIVE else "params"
    plans, info = search(pool, planner, budget, cfg.mode, count, cfg.seed, cfg.enumerate_limit, objective)
    device = pick_device(cfg.device)
    probe = Probe(cfg.data, "train", cfg.proxy.batches * cfg.proxy.batch_size, cfg.proxy.batch_size)
    batches = [x.to(device) for x in probe.batches()]
    scores, info["proxy"] = proxy_scores(cfg, plans, members, zoo, probe, batches, device)
    best = int(np.argmax(scores))
    tau = kendall_tau(members, batches, cfg.seed, cfg.proxy.hooks)
    sets = pool.sets
    spec = spec_of(
        plans[best],
        members,
        zoo["input_size"],
        cfg.num_classes,
        sets,
        {
            "proxy": {name: scores[best]},
            "budget": OmegaConf.to_container(cfg.budget),
            "search": {**info, "partition_run": str(cfg.partition)},
        },
    )
    spec_path = save_spec(spec, out / "spec.yaml")
    table = [
        {"blocks": pool.label(p.blocks), "params": p.params, "flops": p.flops, name: s} for p, s in zip(plans, scores)
    ]
    write_text(out / "candidates.json", json.dumps(table, indent=2))
    plots = [str(plot_architecture(spec, out / "plots" / "architecture.png"))]
    plots.append(str(plot_candidates(table, best, out / "plots" / "candidates.png", name)))
    return {
        "spec": str(spec_path),
        "candidates": str(out / "candidates.json"),
        "plots": plots,
        "chosen": {
            "blocks": pool.label(plans[best].blocks),
            "params": spec["params"],
            "flops": spec["flops"],
            "new_params": spec["new_params"],
            "proxy": name,
            name: scores[best],
        },
        "budget": OmegaConf.to_container(cfg.budget),
        "search": info,
        "kendall_tau": tau,
    }


@hydra.main(version_base="1.3", config_path=CONFIG_SOURCE, config_name="dery/search")
def main(cfg: DictConfig) -> None:
    run_stage("search", cfg, compute)


def command() -> None:
    """`kt-dery-search` (or `python -m dery.search`): the command line and config are checked first;
    no traceback for a user mistake."""
    from tasks.run.launch import hydra_command

    hydra_command(main, "dery/search")


if __name__ == "__main__":
    command()
