"""Safe loading of checkpoints and weight files: tensors only, never pickled code."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from tasks.errors import UserError


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a `.ckpt`/`.pt`/`.pth` file with `weights_only=True`.

    A file that would need to run pickled code to load is refused, with the fix."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint not found: {path}. Check the path, or run the job that makes it first.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:  # not a disallowed object: the bytes themselves are broken
            raise UserError(f"Checkpoint {path} is corrupt or not a PyTorch file ({str(err).splitlines()[-1][:120]}). "
                            "Re-create it, or point to another checkpoint (for resume: the run's checkpoints/last.ckpt).") from None
        raise UserError(
            f"Refusing to load {path}: it holds pickled Python objects that would run code when loaded "
            f"(it asks to import {found.group(1)}). Only tensors, numbers, strings and plain containers are accepted. "
            "Re-save the weights as a plain state_dict (torch.save(model.state_dict(), ...)) or as safetensors."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise UserError(
            f"Checkpoint {path} is corrupt or not a PyTorch file ({type(err).__name__}: {str(err).splitlines()[0]}). "
            "Re-create it, or point to another checkpoint (for resume: the run's checkpoints/last.ckpt)."
        ) from None


def load_state_dict_file(path: str | Path, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a checkpoint (its `state_dict` entry if present).

    With `prefix`, keep only keys under it and strip it (e.g. `student.backbone.`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Weight file not found: {path}. Check the path, or run the job that exports it first.")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise UserError(f"Weight file {path} is not a valid safetensors file ({err}). Re-export it.") from None
    else:
        blob = load_checkpoint(path)
        state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
        if not isinstance(state, dict):
            raise UserError(f"{path} holds a {type(state).__name__}, not a state dict of tensors.")
    if prefix:
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not picked:
            roots = sorted({k.split(".")[0] + "." for k in state})[:20]
            raise UserError(f"No key of {path} starts with prefix '{prefix}'. Key roots found: {roots}.")
        state = picked
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
