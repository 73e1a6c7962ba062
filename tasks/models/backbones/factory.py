"""create_backbone: a timm student by name, with any timm kwargs, the optional small-input
stem, and optional initial weights from an export or a checkpoint."""

from __future__ import annotations

from typing import Any

import timm
import torch.nn as nn

from tasks.config.types import Count
from tasks.errors import UserError
from tasks.models.backbones.small_stem import small_stem_name
from tasks.models.backbones.weights import load_backbone_weights


def timm_name(name: str, small_input_stem: bool = False) -> str:
    """The timm registry name of a student (the `_smallstem` variant when asked for)."""
    if small_input_stem:
        return small_stem_name(name)
    if not timm.is_model(name.split(".")[0]):
        close = timm.list_models(f"*{name.split('.')[0][:5]}*")[:15]
        raise UserError(f"Unknown timm model '{name}'. Similar names: {close}.")
    return name


def create_backbone(
    name: str,
    num_classes: Count = 0,
    small_input_stem: bool = False,
    pretrained: bool = False,
    init: str | None = None,
    init_prefix: str | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """Build a timm model. `num_classes=0` gives pooled features (`model.num_features`).

    `pretrained=True` uses timm's hub weights (needs the network); `init` loads a local
    safetensors export or a checkpoint (keys under `init_prefix`, e.g. `student.backbone.`)."""
    arch = timm_name(name, small_input_stem)
    try:
        model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **timm_kwargs)
    except TypeError as err:
        raise UserError(f"timm model '{name}' rejected its kwargs {sorted(timm_kwargs)}: {err}") from None
    model.kt_spec = {"timm_name": arch, "timm_kwargs": {"num_classes": num_classes, **timm_kwargs}}
    if init:
        load_backbone_weights(model, init, prefix=init_prefix)
    return model
