"""MultiHeadNet: a shared timm backbone with one linear head per task (the plain multi-task
network), and its export as safetensors + a JSON card that KF can load as a teacher."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import save_file

from kf.task_spec import TaskSpec
from tasks.io.cards import TIMM, Card, load_card, write_card
from tasks.io.files import read_safetensors
from tasks.models.backbones import count_parameters, create_backbone, export_backbone

KIND = "multi_head"


class MultiHeadNet(nn.Module):
    """backbone(x) -> z (pooled, or projected to `feature_dim`), then head_k(z) per task."""

    def __init__(self, backbone: nn.Module, specs: Sequence[TaskSpec], feature_dim: int = 0):
        super().__init__()
        self.backbone = backbone
        self.specs = list(specs)
        self.feature_dim = feature_dim
        dim = feature_dim or backbone.num_features
        self.heads = nn.ModuleList(nn.Linear(dim, s.num_classes) for s in self.specs)

    @classmethod
    def create(cls, backbone: dict[str, Any], specs: Sequence[TaskSpec], feature_dim: int = 0) -> MultiHeadNet:
        return cls(create_backbone(**backbone, num_classes=feature_dim), specs, feature_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.features(x)
        return [head(z) for head in self.heads]

    def export(self, export_dir: str | Path, name: str = "model") -> dict[str, str]:
        """<name>.json (card), <name>_backbone.{safetensors,json}, <name>_heads.safetensors."""
        export_dir = Path(export_dir)
        files = export_backbone(self.backbone, export_dir, name=f"{name}_backbone")
        heads = export_dir / f"{name}_heads.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}, str(heads))
        card = write_card(
            export_dir,
            KIND,
            {
                "backbone": Path(files["card"]).name,
                "heads": heads.name,
                "feature_dim": self.feature_dim,
                "tasks": [s.as_dict() for s in self.specs],
                "num_parameters": count_parameters(self),
                "load": "kf.multihead.load_multi_head('<this file>')",
            },
            name=f"{name}.json",
        )
        return {"card": str(card), "backbone": files["weights"], "heads": str(heads)}


def multi_head_from_card(card: Card) -> MultiHeadNet:
    """The loader of kind multi_head (entry point of kt.cards): the shared backbone (its own
    timm card beside this one) and the heads."""
    fields = card.require("backbone", "heads", "feature_dim", "tasks").fields
    specs = [TaskSpec(t["name"], t["factor"], tuple(tuple(g) for g in t["groups"])) for t in fields["tasks"]]
    backbone = load_card(card.file(fields["backbone"], "Backbone card"), kinds_allowed=(TIMM,))
    net = MultiHeadNet(backbone, specs, fields["feature_dim"])
    net.heads.load_state_dict(read_safetensors(card.file(fields["heads"], "Heads"), f"Heads of {card.path}"))
    return net


def load_multi_head(card_path: str | Path) -> MultiHeadNet:
    """Rebuild an exported MultiHeadNet from its card (or the export folder holding it)."""
    return load_card(card_path, kinds_allowed=(KIND,))
