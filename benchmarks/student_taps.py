"""Student feature taps with `stop_early` (the forward ends at the tapped stage) against the
full forward that yields the same feature, side by side: one distillation-style training
step (forward to the tap, a loss on it, backward) at `feature_index=-2` for ResNet-18 with
both stems and ConvNeXt-Atto, at 32 px.

    python -m benchmarks.student_taps [--batch 64] [--rounds 5]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import record, side_by_side
from tasks.distill.taps import stage_features
from tasks.models.backbones import create_backbone

STUDENTS = {"resnet18": {}, "resnet18_smallstem": {"small_input_stem": True}, "convnext_atto": {}}


def step(model: torch.nn.Module, x: torch.Tensor, stop_early: bool):
    def run():
        model.zero_grad(set_to_none=True)
        feature = stage_features(model, x, -2, stop_early=stop_early)[0]
        feature.float().pow(2).mean().backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = {}
    for label, kwargs in STUDENTS.items():
        name = label.removesuffix("_smallstem")
        model = create_backbone(name, **kwargs).train()
        x = torch.randn(args.batch, 3, 32, 32)
        times = side_by_side({"stop_early": step(model, x, True), "full": step(model, x, False)}, rounds=args.rounds)
        results[label] = {**times, "speedup": times["full"] / times["stop_early"]}
    record("student_taps", {"batch": args.batch, "feature_index": -2, "results": results})


if __name__ == "__main__":
    main()
