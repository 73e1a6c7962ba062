"""Fixtures of the KF tests: an untrained tiny digits teacher exported like a classify_digits
run, and overrides that shrink the KF networks."""

from __future__ import annotations

import pytest
import torch

from tasks.backbones import create_backbone, export_backbone

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
