"""DeRy's node similarity: exact linear CKA over all node pairs of all members at once
(dery.cka.cka_matrix, float64) against a per-pair loop in the original's style
(simlarity/compute_sim.py: for every member pair and every node pair, sample-space CKA on
2048-sample chunks, Gram matrices rebuilt for each pair), side by side, for zoos of 2, 4
and 8 members. Representations have the widths of the digits zoo's nodes (pooled input of
node 0 + every node's output of resnet18-narrow, mobilenetv3_large_075, regnetx_002,
convnext_atto and the 6-block ViT, cycled), filled with Gaussian features.

    python -m benchmarks.dery_similarity [--samples 512] [--members 2,4,8] [--rounds 1]
"""

from __future__ import annotations

import argparse
import itertools

import torch

from benchmarks.common import record, side_by_side
from dery.cka import chunked_cka, cka_matrix

DIGITS_ZOO = {  # timm arch, kwargs
    "resnet": ("resnet18", {"channels": [32, 64, 128, 256]}),
    "mobilenet": ("mobilenetv3_large_075", {}),
    "regnet": ("regnetx_002", {}),
    "convnext": ("convnext_atto", {}),
    "vit": (
        "vit_tiny_patch16_224",
        {
            "img_size": 32,
            "patch_size": 8,
            "embed_dim": 128,
            "num_heads": 4,
            "depth": 6,
            "global_pool": "avg",
            "class_token": False,
        },
    ),
}


def representation_widths() -> list[list[int]]:
    from dery.similarity import rep_dims
    from dery.zoo import load_member

    return [
        rep_dims(load_member(n, {"arch": a, "kwargs": k, "weights": "random"}, (3, 32, 32)))
        for n, (a, k) in DIGITS_ZOO.items()
    ]


def per_pair_loop(members: list[list[torch.Tensor]], chunk: int = 2048) -> torch.Tensor:
    """The original's structure: member pairs (self-pairs included), then node pairs."""
    offsets = list(itertools.accumulate([0] + [len(m) for m in members]))
    out = torch.zeros(offsets[-1], offsets[-1], dtype=torch.float64)
    for a, b in itertools.combinations_with_replacement(range(len(members)), 2):
        for i, x in enumerate(members[a]):
            for j, y in enumerate(members[b]):
                out[offsets[a] + i, offsets[b] + j] = out[offsets[b] + j, offsets[a] + i] = chunked_cka(x, y, chunk)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--members", default="2,4,8")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    widths = representation_widths()
    g = torch.Generator().manual_seed(0)
    rows = []
    for count in (int(c) for c in args.members.split(",")):
        members = [[torch.randn(args.samples, w, generator=g) for w in widths[i % len(widths)]] for i in range(count)]
        flat = [r for m in members for r in m]
        vectorised = cka_matrix(flat)
        looped = per_pair_loop(members)
        error = float((vectorised - looped).abs().max())  # one 2048-chunk covers all samples: both exact
        times = side_by_side(
            {"vectorised": lambda: cka_matrix(flat), "per_pair_loop": lambda: per_pair_loop(members)},
            rounds=args.rounds,
            warmup=0,
        )
        rows.append(
            {
                "members": count,
                "representations": len(flat),
                "pairs": len(flat) * (len(flat) + 1) // 2,
                "vectorised_s": times["vectorised"],
                "per_pair_loop_s": times["per_pair_loop"],
                "speedup": times["per_pair_loop"] / times["vectorised"],
                "max_abs_difference": error,
            }
        )
        print(rows[-1], flush=True)
    record("dery_similarity", {"samples": args.samples, "chunk": 2048, "dtype": "float64", "rows": rows})


if __name__ == "__main__":
    main()
