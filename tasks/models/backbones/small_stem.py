"""The small-input stem (3x3 stride-1 first conv, no max-pool), as CIFAR ResNets use,
for any timm CNN, registered in timm as `<arch>_smallstem` so exports reload with
`timm.create_model`."""

from __future__ import annotations

import sys

import timm
import torch.nn as nn
from timm.models import load_pretrained, register_model, resolve_pretrained_cfg

from tasks.errors import UserError

SUFFIX = "_smallstem"


def _first(model: nn.Module, kind: type) -> tuple[nn.Module, str, nn.Module] | None:
    for name, module in model.named_modules():
        if isinstance(module, kind):
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, attr, module
    return None


def apply_small_stem(model: nn.Module, arch: str) -> nn.Module:
    """Make the first conv 3x3 stride 1 and drop a max-pool that directly follows the stem."""
    found = _first(model, nn.Conv2d)
    if found is None:
        raise UserError(f"small_input_stem: '{arch}' has no Conv2d stem. Use it with convolutional students.")
    parent, attr, conv = found
    if conv.kernel_size[0] > 7 or (conv.kernel_size[0] == conv.stride[0] and conv.stride[0] >= 8):
        raise UserError(
            f"small_input_stem: '{arch}' starts with a {conv.kernel_size[0]}x{conv.kernel_size[0]} patch embedding; "
            "a 3x3 stride-1 stem would make one token per pixel. For transformers set the timm kwargs "
            "img_size and patch_size instead."
        )
    removed = conv.stride[0]
    setattr(parent, attr, nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None))
    # Only a max-pool that belongs to the stem (timm ResNets: top-level `maxpool`).
    pool = getattr(model, "maxpool", None)
    if isinstance(pool, nn.MaxPool2d):
        model.maxpool = nn.Identity()
        removed *= pool.stride if isinstance(pool.stride, int) else pool.stride[0]
    for info in getattr(getattr(model, "feature_info", None), "info", getattr(model, "feature_info", [])) or []:
        if isinstance(info, dict) and "reduction" in info:
            info["reduction"] = max(1, info["reduction"] // removed)
    return model


def small_stem_name(arch: str) -> str:
    """Register `<arch>_smallstem` in timm (once) and return that name."""
    base = arch.split(".")[0]
    if base.endswith(SUFFIX):
        return base
    name = base + SUFFIX
    if timm.is_model(name):
        return name
    if not timm.is_model(base):
        raise UserError(f"Unknown timm model '{arch}'. List candidates with timm.list_models('{base[:4]}*').")

    def entrypoint(pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, **kwargs):
        model = timm.create_model(base, pretrained=False, **kwargs)
        apply_small_stem(model, base)
        # The variant's own pretrained_cfg (a local-dir export's, or the base's defaults), named after the
        # variant, so that timm's save_config_for_hf writes an architecture that rebuilds this stem.
        cfg = resolve_pretrained_cfg(
            base, pretrained_cfg=pretrained_cfg or None, pretrained_cfg_overlay=pretrained_cfg_overlay
        ).to_dict()
        model.pretrained_cfg = model.default_cfg = {**cfg, "architecture": name}
        if pretrained:
            load_pretrained(
                model,
                pretrained_cfg=model.pretrained_cfg,
                cache_dir=cache_dir,
                num_classes=kwargs.get("num_classes", cfg.get("num_classes", 1000)),
                in_chans=kwargs.get("in_chans", 3),
            )
        return model

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    register_model(entrypoint)
    setattr(sys.modules[__name__], name, entrypoint)
    return name
