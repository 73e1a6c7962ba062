"""Fixtures of the KF tests: an untrained tiny digits teacher exported like a classify_digits
run, and overrides that shrink the KF networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kf.assemble import load_assembled
from kf.modularity import modularity_metrics
from kf.task_spec import task_targets
from tasks.models.backbones import create_backbone, export_backbone

TINY_NET = {"name": "resnet10t", "channels": [8, 16, 32, 64], "stem_width": 8}  # 0.08M parameters


def shrink(part: str, existing: tuple[str, ...] = ("name",)) -> list[str]:
    """Overrides that make model.<part> the TINY_NET (keys in `existing` are in the config already)."""
    values = {"name": "resnet10t", "channels": "[8,16,32,64]", "stem_width": "8"}
    return [f"{'' if key in existing else '+'}model.{part}.{key}={value}" for key, value in values.items()]


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory) -> str:
    """export/model.json of a tiny 10-class timm teacher (weights from a fixed seed)."""
    torch.manual_seed(0)
    model = create_backbone("resnet10t", num_classes=10, channels=[8, 16, 32, 64], stem_width=8)
    return export_backbone(model, tmp_path_factory.mktemp("teacher") / "export", name="model")["card"]


@pytest.fixture(scope="session")
def confident_digits_teacher(tmp_path_factory) -> str:
    """The tiny teacher with its classifier scaled x30: untrained but sure of itself (one-vs-rest
    margins above 10), so T = 1 and T = 10 targets tell different stories."""
    torch.manual_seed(0)
    model = create_backbone("resnet10t", num_classes=10, channels=[8, 16, 32, 64], stem_width=8)
    with torch.no_grad():
        model.get_classifier().weight.mul_(30.0)
    return export_backbone(model, tmp_path_factory.mktemp("confident") / "export", name="model")["card"]


def load_test_split(overrides: list[str], tmp_path, batches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `batches` test batches of a run's data config, normalised as the module sees them."""
    from tasks.run.instantiate import build
    from tests.conftest import compose_config

    data = build("data", compose_config(overrides, tmp_path).data)
    data.setup("test")
    xs, ys = [], []
    for _, (x, y) in zip(range(batches), data.test_dataloader()):
        xs.append(data.normalize(x))
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def evaluate_export(card: str, x: torch.Tensor, y: torch.Tensor, factors: list[str], batch_size: int) -> dict:
    """What a KF test phase should report, recomputed from the exported assembled network alone:
    logits, codes, task targets and the leakage summaries."""
    net = load_assembled(card)
    with torch.no_grad():
        parts = [net.features(xb) for xb in x.split(batch_size)]
    z = torch.cat([p[0] for p in parts])
    h = [torch.cat([p[1][k] for p in parts]) for k in range(len(net.specs))]
    with torch.no_grad():
        logits = net.outputs(z, h)
    targets = task_targets(net.specs, factors, y)
    leakage, _ = modularity_metrics(
        [c.numpy().astype(np.float64) for c in h],
        z.numpy().astype(np.float64),
        targets.numpy(),
        [s.num_classes for s in net.specs],
        net.task_names,
    )
    return {"net": net, "z": z, "h": h, "logits": logits, "targets": targets, "leakage": leakage}
