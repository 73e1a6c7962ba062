"""A reference for the leakage probes of a finished KF run: the same cross-probes and per-TSN
importances (kf.modularity) on the run's trained TSN codes and on untrained TSNs of the same
architecture, on the same test images. Any image feature says something about every task, so
"other tasks above chance" is read against what an untrained TSN already gives.

    python -m kf.leakage_reference <kf run dir> [--samples 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from kf.assemble import _timm, load_assembled
from kf.factor import TaskSpecificNet
from kf.modularity import modularity_metrics
from kf.task_spec import task_targets
from tasks.errors import UserError
from tasks.run.summary import finished


def run_config(run_dir: Path):
    """The run's composed config: .hydra/config.yaml of a command-line run, else composed again
    from the overrides its summary.json records."""
    saved = run_dir / ".hydra" / "config.yaml"
    if saved.is_file():
        return OmegaConf.load(saved)
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = json.loads((run_dir / "summary.json").read_text())["overrides"]
    GlobalHydra.instance().clear()
    from tasks.config.location import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[o for o in overrides if not o.startswith("hydra.")])


def codes(run_dir: Path, samples: int, seed: int) -> dict:
    """z, trained h (K, N, D), untrained h (K, N, D), labels and the data's factor names for the
    first `samples` test images, and the assembled network."""
    from tasks.run.instantiate import build

    card = run_dir / "export" / "assembled.json"
    if not card.is_file() or not finished(run_dir):
        raise UserError(f"{run_dir} is not a finished KF run (needs summary.json and export/assembled.json).")
    data = build("data", run_config(run_dir).data)
    data.setup("test")
    net = load_assembled(card)
    spec = json.loads(card.read_text())
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        untrained = [
            TaskSpecificNet(_timm(spec["tsn"]), spec["dim"], spec.get("gaussian_tsn", False)).eval() for _ in net.specs
        ]
    zs, hs, rs, ys, seen = [], [], [], [], 0
    with torch.no_grad():
        for x, y in data.test_dataloader():
            if seen >= samples:
                break
            x = data.normalize(x)
            z, h = net.features(x)
            zs.append(z)
            hs.append(torch.stack(h))
            rs.append(torch.stack([t(x) for t in untrained]))
            ys.append(y)
            seen += len(x)
    return {
        "z": torch.cat(zs)[:samples],
        "trained": torch.cat(hs, 1)[:, :samples],
        "untrained": torch.cat(rs, 1)[:, :samples],
        "y": torch.cat(ys)[:samples],
        "factors": list(getattr(data, "factor_names", None) or ["label"]),
        "net": net,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished KF run dir")
    parser.add_argument("--samples", type=int, default=2000, help="test images to probe (half fit, half scored)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the untrained TSNs and of the split")
    args = parser.parse_args(argv)
    try:
        found = codes(Path(args.run), args.samples, args.seed)
        net, z = found["net"], found["z"].numpy().astype(np.float64)
        targets = task_targets(net.specs, found["factors"], found["y"]).numpy()
        out = {}
        for label in ("trained", "untrained"):
            metrics, _ = modularity_metrics(
                [c.numpy().astype(np.float64) for c in found[label]],
                z,
                targets,
                [s.num_classes for s in net.specs],
                net.task_names,
                seed=args.seed,
            )
            out[label] = {k.replace("test/", ""): v for k, v in metrics.items()}
    except UserError as err:
        raise SystemExit(f"error: {err}") from None
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
