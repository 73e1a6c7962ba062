"""DeRy's search: exhaustive NASWOT over every feasible candidate, against the number of
candidates, and how often the paper's random search (N = 500) finds one of its top 5.

Zoos: the first 3, 6, 9 and 12 members of conf/dery/zoo/random12.yaml (random init, every
family, 32 px) at K = 4 with same-stage equivalence sets (block k of every member in set k:
the most valid candidates a partition allows), and, with --partition, a real partition run
(the digits zoo of `python -m tasks.chain dery_digits`) at its chain's budgets, and its
trained members with same-stage sets. NASWOT batches: 5 x 32 class-stratified digits, as the search
uses. Side by side per zoo:
  plan_s        exact parameters and FLOPs of every valid candidate (the enumeration)
  tree_s        NASWOT of every feasible candidate through the prefix tree (no cache)
  alone_s_per   NASWOT of one candidate scored alone (a random sample of --alone of them),
                whose scores must equal the tree's exactly
  milp_top20_s  the exact MILP's 20 largest feasible candidates
  random500     over --seeds seeds: N = 500 uniform feasible candidates contain one of the
                exhaustive top 5 (measured, and 1 - C(F - 5, N) / C(F, N) exactly)

    python -m benchmarks.dery_search [--members 3,6,9,12] [--alone 100] [--seeds 20] [--threads 1]
    python -m benchmarks.dery_search --members "" --partition <dery_digits chain>/partition --budgets none,1.6e6,2.5e6
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from benchmarks.common import RESULTS, record
from dery.candidates import Budget, Pool, exhaustive
from dery.milp import milp
from dery.partition import MemberNodes
from dery.plan import Planner
from dery.prefix_tree import PrefixTree, candidate_naswot, candidate_network
from dery.probe import Probe
from dery.search import load_partition, zoo_members
from dery.zoo import load_zoo

CONF = Path(__file__).resolve().parents[1] / "conf"


def stage_sets(members) -> dict:
    """Each member at its first cap-respecting cut, block k in set k."""
    out = {"K": 4, "members": {}}
    for name, m in members.items():
        cuts = MemberNodes.of(name, m.node_params, 4, 0.2).feasible[0]
        out["members"][name] = {
            "blocks": [{"stage": k, "start": int(cuts[k]), "end": int(cuts[k + 1]) - 1, "set": k} for k in range(4)]
        }
    return out


def top5_probability(feasible: int, n: int = 500) -> float:
    """P(a uniform n-subset of `feasible` holds one of 5 given candidates)."""
    if n >= feasible:
        return 1.0
    return 1.0 - math.comb(feasible - 5, n) / math.comb(feasible, n)


def measure(label: str, pool: Pool, planner: Planner, members, batches, budget: Budget, args) -> dict:
    start = time.perf_counter()
    feasible, plans = exhaustive(pool, planner, budget)
    plan_s = time.perf_counter() - start
    tree = PrefixTree(members, batches, seed=0)
    start = time.perf_counter()
    scores = tree.scores(feasible)
    tree_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    sample = sorted(rng.choice(len(feasible), size=min(args.alone, len(feasible)), replace=False).tolist())
    start = time.perf_counter()
    alone = [candidate_naswot(candidate_network(feasible[i], members, 0), batches, 0) for i in sample]
    alone_s = (time.perf_counter() - start) / len(sample)
    start = time.perf_counter()
    milp(pool, planner, budget, 20)
    milp_s = time.perf_counter() - start
    top5 = set(np.argsort(scores)[::-1][:5].tolist())
    hits = 0
    for seed in range(args.seeds):  # the random search's draw, scored with the same (cached) scores
        drawn = np.random.default_rng(seed).choice(len(feasible), size=min(500, len(feasible)), replace=False)
        hits += int(drawn[np.argmax(np.asarray(scores)[drawn])] in top5)
    row = {
        "zoo": label,
        "members": len(members),
        "budget": budget.describe(),
        "combinations": pool.size(),
        "valid": len(plans),
        "feasible": len(feasible),
        "plan_s": plan_s,
        "tree_s": tree_s,
        "tree_ms_per_candidate": 1e3 * tree_s / len(feasible),
        "evaluated_stages": tree.evaluated_stages,
        "stages_alone": 5 * len(feasible),
        "alone_sample": len(sample),
        "alone_s_per_candidate": alone_s,
        "tree_speedup": alone_s * len(feasible) / tree_s,
        "tree_equals_alone": all(scores[i] == a for i, a in zip(sample, alone)),
        "milp_top20_s": milp_s,
        "random500_top5": f"{hits}/{args.seeds}",
        "random500_top5_rate": hits / args.seeds,
        "random500_top5_exact": top5_probability(len(feasible)),
        "best_naswot": float(max(scores)),
        "best": pool.label(feasible[int(np.argmax(scores))].blocks),
    }
    print(row, flush=True)
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    synthetic = [r for r in rows if r["zoo"].startswith("random12")]
    ax.plot([r["feasible"] for r in synthetic], [r["tree_s"] for r in synthetic], "o-", label="prefix tree (exact)")
    ax.plot(
        [r["feasible"] for r in synthetic],
        [r["alone_s_per_candidate"] * r["feasible"] for r in synthetic],
        "s--",
        label="each candidate alone (sampled)",
    )
    for r in rows:
        if not r["zoo"].startswith("random12"):
            ax.plot(r["feasible"], r["tree_s"], "k^")
            ax.annotate(r["zoo"], (r["feasible"], r["tree_s"]), fontsize=7)
    ax.axhline(600, color="grey", lw=0.8, ls=":", label="10 min")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("feasible candidates (K = 4)")
    ax.set_ylabel("seconds, 2 CPU cores")
    ax.set_title("Exhaustive NASWOT over every feasible candidate")
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", default="3,6,9,12")
    parser.add_argument("--alone", type=int, default=100, help="candidates scored alone, for the per-candidate time")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--partition", default=None, help="a dery.partition run dir (e.g. the digits chain's)")
    parser.add_argument(
        "--budgets", default="", help="parameter budgets for --partition, comma-separated ('none': unbounded)"
    )
    parser.add_argument("--name", default="dery_search")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (the 32 px networks' small ops gain nothing from a second one)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = OmegaConf.load(CONF / "data" / "digits.yaml")
    data.seed = 0
    batches = list(Probe(data, "train", 160, 32).batches())
    rows = []
    zoo = OmegaConf.to_container(OmegaConf.load(CONF / "dery" / "zoo" / "random12.yaml").zoo)
    names = list(zoo["members"])
    for count in (int(c) for c in args.members.split(",") if c):
        members = load_zoo({n: zoo["members"][n] for n in names[:count]}, tuple(zoo["input_size"]))
        pool = Pool(stage_sets(members), members)
        planner = Planner(members, zoo["input_size"], 10)
        rows.append(measure(f"random12[:{count}]", pool, planner, members, batches, Budget(), args))
    if args.partition:
        partition, zoo_json = load_partition(args.partition)
        members = zoo_members(zoo_json)
        pool, planner = Pool(partition, members), Planner(members, zoo_json["input_size"], 10)
        for value in [None if b == "none" else float(b) for b in args.budgets.split(",") if b] or [None]:
            rows.append(
                measure(
                    f"partition <= {value:.3g}" if value else "partition",
                    pool,
                    planner,
                    members,
                    batches,
                    Budget(params=value),
                    args,
                )
            )
        # the same (trained) members with same-stage sets: every combination the topology rule allows
        rows.append(
            measure(
                "partition's zoo, same-stage sets",
                Pool(stage_sets(members), members),
                planner,
                members,
                batches,
                Budget(),
                args,
            )
        )
    if any(r["zoo"].startswith("random12") for r in rows):
        plot(rows, RESULTS / f"{args.name}.png")
    record(
        args.name,
        {
            "K": 4,
            "proxy": "NASWOT, 5 x 32 stratified digits, seed 0",
            "threads": args.threads,
            "load_average": list(os.getloadavg()),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
