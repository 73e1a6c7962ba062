"""Load weights into a timm backbone with clear errors (from a weight file, a checkpoint or an
export of either layout), rebuild an exported backbone, and the old-layout writer
(`<name>.safetensors` + `<name>.json`) that the method packages use until they move to
tasks.models.backbones.export.export_timm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.nn as nn
from safetensors.torch import save_file

from tasks.errors import UserError
from tasks.io.checkpoints import load_state_dict_file

_WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")  # a folder named so is a mistake, not an export


def _classifier_keys(model: nn.Module) -> set[str]:
    names = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else names
    return {f"{n}.{p}" for n in names for p in ("weight", "bias")}


def weight_file(path: str | Path) -> Path:
    """The weight file behind `path`: the path itself, or the weights an export folder or card names."""
    path = Path(str(path)).expanduser()
    if (path.is_dir() and path.suffix not in _WEIGHT_SUFFIXES) or path.suffix == ".json":
        from tasks.io.cards import read_card

        return read_card(path).weights()
    return path


def load_backbone_weights(
    model: nn.Module, path: str | Path, prefix: str | None = None, strict_head: bool = False
) -> nn.Module:
    """Load a backbone's weights; everything but the classifier must match exactly.

    The classifier may be absent or of another size (it is then left as initialised): right
    for a backbone init. `strict_head=True` (a teacher) makes it part of the exact match, so a
    teacher never silently gets a random head."""
    path = weight_file(path)
    state = load_state_dict_file(path, prefix)
    own = model.state_dict()
    head = _classifier_keys(model)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape and k not in head]
    if mismatched:
        details = ", ".join(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:5])
        raise UserError(
            f"Weights in {path} do not fit the backbone ({details}). Use the architecture they were exported from."
        )
    if strict_head:
        _check_head(state, own, head, path)
        head = set()
    state = {k: v for k, v in state.items() if not (k in head and k in own and own[k].shape != v.shape)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in head]
    unexpected = [k for k in result.unexpected_keys if k not in head]
    if missing or unexpected:
        raise UserError(
            f"Weights in {path} do not match the backbone: missing {missing[:8]}, unexpected {unexpected[:8]}"
            f"{' (check init_prefix)' if prefix is None and unexpected else ''}. "
            "Use the architecture they were exported from."
        )
    return model


def _check_head(state: dict, own: dict, head: set[str], path: Path) -> None:
    """A teacher's classifier must come from its weights, with the model's shape."""
    present = sorted(k for k in head if k in own)
    missing = [k for k in present if k not in state]
    wrong = [k for k in present if k in state and state[k].shape != own[k].shape]
    if not (missing or wrong):
        return
    if missing:
        raise UserError(
            f"The teacher's classifier does not come from {path}: the file has no {missing}. A teacher keeps the "
            "head it was trained with; use weights that hold it (check the key prefix)."
        )
    shapes = ", ".join(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong)
    raise UserError(
        f"The teacher's classifier in {path} has another shape than the model's ({shapes}), so it would be "
        f"replaced by a random one. Set the teacher's number of classes to the weights' "
        f"({tuple(state[wrong[0]].shape)[0]}), or use a teacher trained on this data."
    )


def export_backbone(
    model: nn.Module, export_dir: str | Path, name: str = "model", card: dict[str, Any] | None = None
) -> dict[str, str]:
    """Write `<name>.safetensors` and `<name>.json` (architecture, kwargs, how to load)."""
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    spec = getattr(model, "kt_spec", None)
    if spec is None:
        raise UserError("export_backbone needs a model built by tasks.models.backbones.create_backbone.")
    weights = export_dir / f"{name}.safetensors"
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    kwargs = dict(spec["timm_kwargs"])
    info = {
        "timm_name": spec["timm_name"],
        "timm_kwargs": kwargs,
        "weights": weights.name,
        "num_parameters": count_parameters(model),
        "load": (
            (
                "import tasks.models.backbones  # registers *_smallstem variants\n"
                if spec["timm_name"].endswith("_smallstem")
                else ""
            )
            + f"timm.create_model('{spec['timm_name']}', pretrained=True, "
            f"pretrained_cfg_overlay=dict(file='{weights.name}', num_classes={kwargs.get('num_classes', 0)}), "
            "**timm_kwargs)"
        ),
        **(card or {}),
    }
    card_path = export_dir / f"{name}.json"
    card_path.write_text(json.dumps(info, indent=2, default=str))
    return {"weights": str(weights), "card": str(card_path)}


def load_exported(card_path: str | Path, **overrides: Any) -> nn.Module:
    """Rebuild an exported timm backbone or classifier (an export folder or its card, either
    layout); `overrides` go to timm.create_model."""
    from tasks.io.cards import TIMM, load_card

    return load_card(card_path, kinds_allowed=(TIMM,), **overrides)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Its parameters (shared ones once), or only those that require grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
