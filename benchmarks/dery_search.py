"""DeRy's reassembly search: time against the number of candidates. Zoos of 3 to 12
random-init members (the tiny zoo's resnet / mobilenet / ViT, repeated with other seeds),
K = 4 blocks each in the same-stage equivalence sets, so a zoo of M members has up to M^4
candidates. Side by side per zoo: exhaustive planning of every valid candidate (exact
parameters and FLOPs), MILP yielding the 20 largest feasible ones under a parameter
budget, and the NASWOT proxy of one candidate (5 batches of 32 digits).

    python -m benchmarks.dery_search [--members 3,6,9,12] [--rounds 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from benchmarks.common import record, side_by_side
from dery.partition import MemberNodes
from dery.plan import Planner
from dery.proxy import naswot
from dery.candidates import Budget, Pool, exhaustive, milp
from dery.search import network_of
from dery.zoo import load_zoo
from tasks.data import DigitsDataModule

CONF = Path(__file__).resolve().parents[1] / "conf"


def synthetic_partition(members) -> dict:
    """Each member cut into 4 blocks (its first feasible cut), block k in set k."""
    out = {"K": 4, "members": {}}
    for name, m in members.items():
        cuts = MemberNodes.of(name, m.node_params, 4, 0.2).feasible[0]
        out["members"][name] = {"blocks": [{"stage": k, "start": int(cuts[k]), "end": int(cuts[k + 1]) - 1, "set": k} for k in range(4)]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", default="3,6,9,12")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    tiny = OmegaConf.to_container(OmegaConf.load(CONF / "dery" / "zoo" / "tiny.yaml").zoo)
    data = DigitsDataModule(batch_size=32)
    data.setup("fit")
    batches = [data.normalize(data.train_set.tensors[0][i * 32:(i + 1) * 32]) for i in range(5)]
    rows = []
    for count in (int(c) for c in args.members.split(",")):
        names = list(tiny["members"])
        specs = {f"{names[i % 3]}{i // 3}": tiny["members"][names[i % 3]] for i in range(count)}
        members = load_zoo(specs, tuple(tiny["input_size"]))
        pool = Pool(synthetic_partition(members), members)
        planner = Planner(members, tiny["input_size"], 10)
        _, plans = exhaustive(pool, planner, Budget())    # warms the part caches, as a search would
        budget = Budget(params=float(np.median([p.params for p in plans])))
        one = plans[0]

        def proxy():
            torch.manual_seed(0)
            return naswot(network_of(one, members), batches)

        times = side_by_side({"exhaustive": lambda: exhaustive(pool, planner, budget),
                              "milp_top20": lambda: milp(pool, planner, budget, 20), "naswot_one": proxy},
                             rounds=args.rounds, warmup=0)
        rows.append({"members": count, "combinations": pool.size(), "valid_candidates": len(plans),
                     "exhaustive_s": times["exhaustive"], "exhaustive_us_per_candidate": 1e6 * times["exhaustive"] / len(plans),
                     "milp_top20_s": times["milp_top20"], "naswot_per_candidate_s": times["naswot_one"]})
        print(rows[-1], flush=True)
    record("dery_search", {"K": 4, "budget": "median parameters of the valid candidates", "rows": rows})


if __name__ == "__main__":
    main()
