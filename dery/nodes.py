"""Atomic nodes of a timm model: the ordered module names DeRy cuts into blocks (one
residual / transformer block each, plus down-sampling layers that stand between stages),
found automatically per architecture family, and the layout of the tensors between them.

Layouts: `nchw` (CNN maps), `tokens` (B, N, C: ViT), `nhwc` (B, H, W, C: timm Swin)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from tasks.errors import UserError

LAYOUTS = ("nchw", "tokens", "nhwc")


def _children(module: nn.Module, prefix: str) -> list[str]:
    """`prefix.<child>` for every child that is not an Identity."""
    return [f"{prefix}.{name}" for name, child in module.named_children() if not isinstance(child, nn.Identity)]


def _resnet(model) -> list[str]:
    return [n for s in range(1, 5) for n in _children(getattr(model, f"layer{s}"), f"layer{s}")]


def _regnet(model) -> list[str]:
    return [n for s in range(1, 5) for n in _children(getattr(model, f"s{s}"), f"s{s}")]


def _staged(stages_attr: str) -> Callable[[nn.Module], list[str]]:
    """ConvNeXt `stages.i` / Swin `layers.i`: the stage's down-sampling (when it has one)
    is a node of its own, then every block."""

    def find(model) -> list[str]:
        names = []
        for i, stage in enumerate(getattr(model, stages_attr)):
            down = getattr(stage, "downsample", None)
            if down is not None and not isinstance(down, nn.Identity):
                names.append(f"{stages_attr}.{i}.downsample")
            names += _children(stage.blocks, f"{stages_attr}.{i}.blocks")
        return names

    return find


def _efficientnet(model) -> list[str]:
    return [n for s, stage in enumerate(model.blocks) for n in _children(stage, f"blocks.{s}")]


def _vit(model) -> list[str]:
    return _children(model.blocks, "blocks")


def _families() -> list[tuple[str, type, Callable, str]]:
    from timm.models.convnext import ConvNeXt
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3
    from timm.models.regnet import RegNet
    from timm.models.resnet import ResNet
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    return [
        ("resnet", ResNet, _resnet, "nchw"),
        ("regnet", RegNet, _regnet, "nchw"),
        ("convnext", ConvNeXt, _staged("stages"), "nchw"),
        ("efficientnet", EfficientNet, _efficientnet, "nchw"),
        ("mobilenetv3", MobileNetV3, _efficientnet, "nchw"),
        ("vit", VisionTransformer, _vit, "tokens"),
        ("swin", SwinTransformer, _staged("layers"), "nhwc"),
    ]


def family_of(model: nn.Module) -> str | None:
    for name, cls, _, _ in _families():
        if isinstance(model, cls):
            return name
    return None


def find_nodes(model: nn.Module, nodes: list[str] | None = None, layout: str | None = None) -> tuple[list[str], str]:
    """(ordered node names, layout). `nodes`/`layout` from the config override the automatic
    discovery, which covers ResNet/ResNeXt, RegNet, ConvNeXt, EfficientNet/MobileNet, ViT, Swin."""
    if layout is not None and layout not in LAYOUTS:
        raise UserError(f"Unknown node layout '{layout}'. Use one of {list(LAYOUTS)}.")
    if nodes:
        from tasks.distill.taps import resolve_module

        for name in nodes:
            resolve_module(model, name)  # fails with the valid names
        return list(nodes), layout or "nchw"
    for _, cls, find, default_layout in _families():
        if isinstance(model, cls):
            return find(model), layout or default_layout
    known = ", ".join(name for name, *_ in _families())
    raise UserError(
        f"DeRy cannot find the nodes of a {type(model).__name__} automatically (known families: {known}). "
        "List them in the member's config: nodes: [<module name>, ...] in forward order, and layout: nchw|tokens|nhwc."
    )
