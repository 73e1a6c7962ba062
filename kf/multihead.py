"""MultiHeadNet: a shared timm backbone with one linear head per task (the plain multi-task
network), and its export as safetensors + a JSON card that KF can load as a teacher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
from safetensors.torch import save_file

from kf.task_spec import TaskSpec
from tasks.backbones import count_parameters, create_backbone, export_backbone, load_exported
from tasks.errors import UserError
from tasks.files import read_json, read_safetensors

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
    def create(cls, backbone: dict[str, Any], specs: Sequence[TaskSpec], feature_dim: int = 0) -> "MultiHeadNet":
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
        card = export_dir / f"{name}.json"
        card.write_text(json.dumps({
            "kind": KIND, "backbone": Path(files["card"]).name, "heads": heads.name, "feature_dim": self.feature_dim,
            "tasks": [s.as_dict() for s in self.specs], "num_parameters": count_parameters(self),
            "load": "kf.multihead.load_multi_head('<this file>')",
        }, indent=2))
        return {"card": str(card), "backbone": files["weights"], "heads": str(heads)}


def load_multi_head(card_path: str | Path) -> MultiHeadNet:
    """Rebuild an exported MultiHeadNet from its card."""
    card_path = Path(card_path)
    card = read_json(card_path, "Multi-head export card")
    if card.get("kind") != KIND:
        raise UserError(f"{card_path} is not a multi-head export (kind={card.get('kind')!r}).")
    specs = [TaskSpec(t["name"], t["factor"], tuple(tuple(g) for g in t["groups"])) for t in card["tasks"]]
    net = MultiHeadNet(load_exported(card_path.parent / card["backbone"]), specs, card["feature_dim"])
    net.heads.load_state_dict(read_safetensors(card_path.parent / card["heads"], f"Heads of {card_path}"))
    return net
