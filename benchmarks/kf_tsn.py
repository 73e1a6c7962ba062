"""What ten task-specific networks cost on the CPU: forward + backward of 10 TSNs (the paper's
MobileNetV2 x0.5, or the narrow ResNet-10t of kf_digits), run one after another or as one
torch.func.vmap over stacked weights, side by side with one ResNet-18 (the digits teacher's
training step) on a digits batch. This is the measurement behind kf_digits' TSN choice.

    python -m benchmarks.kf_tsn [--rounds 5]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.classifier_throughput import BATCH
from benchmarks.common import record, side_by_side
from kf.factor import TaskSpecificNet, run_stacked
from tasks.models.backbones import count_parameters, create_backbone

CANDIDATES = {
    "mobilenetv2_050": {"name": "mobilenetv2_050"},
    "resnet10t_c16": {"name": "resnet10t", "channels": [16, 32, 64, 128], "stem_width": 8},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, 32, 32)
    reference = create_backbone("resnet18", num_classes=10)
    runs = {"resnet18 x1": lambda: reference(x).sum().backward()}
    sizes = {}
    for label, spec in CANDIDATES.items():
        tsns = [TaskSpecificNet(spec, 512) for _ in range(args.tasks)]
        sizes[label] = count_parameters(tsns[0])
        runs[f"{label} x{args.tasks} loop"] = lambda tsns=tsns: sum(t(x).sum() for t in tsns).backward()
        runs[f"{label} x{args.tasks} vmap"] = lambda tsns=tsns: run_stacked(tsns, x).sum().backward()
    times = side_by_side(runs, rounds=args.rounds)
    base = times["resnet18 x1"]
    record(
        "kf_tsn",
        {
            "what": f"forward + backward, batch {BATCH} of 32x32 images, CPU; TSN = timm backbone + Linear(-> 512)",
            "rounds": args.rounds,
            "seconds": times,
            "relative_to_resnet18": {k: v / base for k, v in times.items()},
            "parameters_per_tsn": sizes,
        },
    )


if __name__ == "__main__":
    main()
