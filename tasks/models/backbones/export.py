"""Classifiers and backbones in timm's Hub layout: `config.json` (timm's save_config_for_hf,
with the data's preprocessing and the card fields of tasks.io.cards) beside `model.safetensors`.
`timm.create_model("local-dir:<folder>", pretrained=True)` loads it; `load_timm_card` is the
registry's loader of the kind "timm", for this layout and for the old `<name>.json` cards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn
from safetensors.torch import save_file

from tasks.errors import UserError
from tasks.io import cards

# pretrained_cfg keys that describe timm's own hub weights (tag, licence, paper): not ours.
_PROVENANCE = (
    "tag",
    "license",
    "origin_url",
    "paper_ids",
    "paper_name",
    "notes",
    "hf_hub_id",
    "hf_hub_filename",
    "url",
    "file",
    "source",
    "state_dict",
    "custom_load",
    "label_offset",
)


def export_timm(
    model: nn.Module, export_dir: str | Path, card: dict[str, Any] | None = None, data: dict[str, Any] | None = None
) -> dict[str, str]:
    """Write `model.safetensors` + `config.json` for a timm model (one made by
    tasks.models.backbones.create_backbone, or any timm model). `data` is tasks.io.cards.data_config's
    dict (mean, std, input size, class names); `card` adds card fields (run, ...)."""
    from timm.models._hub import save_config_for_hf

    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    if not hasattr(model, "pretrained_cfg"):
        raise UserError(f"export_timm needs a timm model; {type(model).__name__} has no pretrained_cfg.")
    arch = getattr(model, "kt_spec", {}).get("timm_name") or model.pretrained_cfg.get("architecture")
    weights = export_dir / cards.WEIGHTS
    save_file({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}, str(weights))
    saved_cfg = model.pretrained_cfg
    model.pretrained_cfg = {k: v for k, v in saved_cfg.items() if k not in _PROVENANCE} | {"architecture": arch}
    config_path = export_dir / cards.TIMM_CONFIG
    extra = {"kind": cards.TIMM, "format": cards.FORMAT, **(card or {})}
    extra["load"] = (
        "import tasks.models.backbones  # registers the *_smallstem variants in timm\n"
        if arch.endswith("_smallstem")
        else ""
    ) + f"timm.create_model('local-dir:{export_dir}', pretrained=True)"
    try:
        save_config_for_hf(model, str(config_path), model_config=extra)
    finally:
        model.pretrained_cfg = saved_cfg
    if data:
        cards.stamp(export_dir, {}, data)
    return {"weights": str(weights), "card": str(config_path)}


def _small_stem(arch: str) -> None:
    if arch.endswith("_smallstem"):
        from tasks.models.backbones.small_stem import small_stem_name

        small_stem_name(arch)


def load_timm_card(card: cards.Card, **overrides: Any) -> nn.Module:
    """A timm network from its export card (either layout); `overrides` go to timm.create_model."""
    import timm

    if card.legacy and "timm_name" in card.fields:
        card.require("timm_kwargs", "weights")
        arch, kwargs = card.fields["timm_name"], {**card.fields["timm_kwargs"], **overrides}
        _small_stem(arch)
        overlay = dict(file=str(card.weights()), num_classes=card.fields["timm_kwargs"].get("num_classes", 0))
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    else:
        card.require("architecture")
        arch = str(card.fields["architecture"])
        _small_stem(arch)
        if not timm.is_model(arch):
            raise UserError(
                f"Export card {card.path} names the architecture '{arch}', which this timm "
                f"({timm.__version__}) does not have."
            )
        card.weights()  # checked before timm reads it (timm picks the file by its name)
        model = timm.create_model(f"local-dir:{card.folder}", pretrained=True, **overrides)
        kwargs = {**dict(card.fields.get("model_args") or {}), **overrides}
    model.kt_spec = {"timm_name": arch, "timm_kwargs": kwargs}
    return model
