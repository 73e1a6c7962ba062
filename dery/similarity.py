"""Stage 1: node similarity of the zoo. Every member runs on the probe set; the globally
pooled input of its first node and the pooled output of every node are its
representations (node i's input is node i-1's output: the nodes form a chain). Exact
linear CKA in float64 between all representations of all members comes out as one
matrix; features and the matrix are cached on disk, keyed by members, weights and probe.

    python -m dery.similarity                                  # the digits zoo, random init
    python -m dery.similarity zoo.members.resnet.weights=run:<zoo run dir> ...
    python -m dery.similarity dery/zoo=imagenet data=imagefolder data.root=<imagenet>
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

import tasks  # noqa: F401  (resolvers)
from dery.app import run_stage
from dery.cka import cka_matrix
from dery.layout import pool
from dery.plots import plot_cka
from dery.probe import Probe
from dery.zoo import Member, load_zoo
from tasks.config.check import check_config
from tasks.config.location import CONFIG_SOURCE
from tasks.distill.taps import FeatureTap
from tasks.io.files import atomic_path, write_text

CACHE_VERSION = 1


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _key(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def feature_key(member: Member, input_size, probe_key: str) -> str:
    return _key(
        {
            "v": CACHE_VERSION,
            "arch": member.arch,
            "kwargs": member.kwargs,
            "weights": member.fingerprint,
            "nodes": member.nodes,
            "layout": member.layout,
            "input": list(input_size),
            "probe": probe_key,
        }
    )


@torch.no_grad()
def extract(member: Member, probe: Probe, device: torch.device) -> torch.Tensor:
    """(n, R) float64 pooled representations, concatenated: input of node 0, then every
    node's output; `rep_dims` splits the columns."""
    model = member.model.to(device).eval()
    tap = FeatureTap(model, member.nodes, stop_early=True)
    first = model.get_submodule(member.nodes[0])
    seen: dict[str, torch.Tensor] = {}
    handle = first.register_forward_pre_hook(lambda m, args: seen.__setitem__("in", args[0]))
    rows = []
    try:
        for x in tqdm(probe.batches(), desc=f"features {member.name}", leave=False, unit="batch", disable=None):
            outs = tap(lambda: model(x.to(device)))
            reps = [seen["in"]] + [outs[n] for n in member.nodes]
            rows.append(torch.cat([pool(r.to(torch.float64), member.layout) for r in reps], dim=1).cpu())
    finally:
        tap.remove()
        handle.remove()
        model.cpu()
    return torch.cat(rows)


def rep_dims(member: Member) -> list[int]:
    return [member.in_channels(0)] + [member.out_channels(i) for i in range(len(member.nodes))]


def member_features(
    member: Member, probe: Probe, probe_key: str, input_size, cache: Path, device: torch.device
) -> tuple[torch.Tensor, bool]:
    path = cache / f"features-{feature_key(member, input_size, probe_key)}.safetensors"
    if path.is_file():
        return load_file(str(path))["features"], True
    features = extract(member, probe, device)
    with atomic_path(path) as temp:  # a killed or full-disk write never leaves a cache entry to trip over
        save_file({"features": features.contiguous()}, str(temp))
    return features, False


def compute(cfg: DictConfig, out: Path) -> dict[str, Any]:
    check_config(cfg, sections=())  # every '???' (e.g. a member's weights) is set
    input_size = tuple(cfg.zoo.input_size)
    members = load_zoo(OmegaConf.to_container(cfg.zoo.members, resolve=True), input_size)
    probe = Probe(cfg.data, cfg.probe.split, cfg.probe.num_images, cfg.probe.batch_size)
    probe_key = probe.fingerprint()
    cache = Path(cfg.cache_dir).expanduser()
    device = pick_device(cfg.device)
    keys = [feature_key(m, input_size, probe_key) for m in members.values()]
    matrix_path = cache / f"cka-{_key(keys)}.safetensors"
    hits = {}
    if matrix_path.is_file():
        cka, hits = load_file(str(matrix_path))["cka"], {name: True for name in members}
    else:
        reps = []
        for name, member in tqdm(members.items(), desc="zoo", unit="member", disable=None):
            features, hits[name] = member_features(member, probe, probe_key, input_size, cache, device)
            reps += list(torch.split(features, rep_dims(member), dim=1))
        with torch.no_grad():
            cka = cka_matrix([r.to(device) for r in reps]).cpu()
        with atomic_path(matrix_path) as temp:
            save_file({"cka": cka.contiguous()}, str(temp))
    offsets, start = {}, 0
    for name, member in members.items():
        offsets[name] = start
        start += len(member.nodes) + 1
    with atomic_path(out / "similarity.safetensors") as temp:
        save_file({"cka": cka.contiguous()}, str(temp))
    zoo = {
        "input_size": list(input_size),
        "probe": {"split": cfg.probe.split, "images": len(probe), "fingerprint": probe_key},
        "offsets": offsets,
        "members": {name: m.describe() for name, m in members.items()},
    }
    write_text(out / "zoo.json", json.dumps(zoo, indent=2))
    plot = plot_cka(cka, members, offsets, out / "plots" / "cka.png")
    return {
        "zoo": str(out / "zoo.json"),
        "similarity": str(out / "similarity.safetensors"),
        "plots": [str(plot)],
        "cache": {"matrix": str(matrix_path), "hit": all(hits.values()), "feature_hits": hits},
        "members": {
            name: {"arch": m.arch, "nodes": len(m.nodes), "params": sum(m.node_params), "accuracy": m.accuracy}
            for name, m in members.items()
        },
        "representations": int(cka.shape[0]),
        "probe_images": len(probe),
    }


@hydra.main(version_base="1.3", config_path=CONFIG_SOURCE, config_name="dery/similarity")
def main(cfg: DictConfig) -> None:
    run_stage("similarity", cfg, compute)


def command() -> None:
    """`kt-dery-similarity` (or `python -m dery.similarity`): the command line and config are checked first;
    no traceback for a user mistake."""
    from tasks.run.launch import hydra_command

    hydra_command(main, "dery/similarity")


if __name__ == "__main__":
    command()
