"""Safe loading of checkpoints and weight files: tensors only, never pickled code; every
failure names the file and what was expected, through tasks.io.files. The writing side is
tasks.training.checkpointing."""

from __future__ import annotations

from pathlib import Path

import torch

from tasks.errors import UserError
from tasks.io import files

RESUME_FIX = "Re-create it, or point to another checkpoint (for resume: the run's checkpoints/last.ckpt)."


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", what: str = "Checkpoint") -> dict:
    """Load a `.ckpt`/`.pt`/`.pth` file with `weights_only=True`.

    A file that would need to run pickled code to load is refused, with the fix."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}. Check the path, or run the job that makes it first.")
    blob = files.read_torch(path, what, RESUME_FIX, map_location=map_location)
    if not isinstance(blob, dict):
        raise UserError(f"{what} {path} holds a {type(blob).__name__}, not a checkpoint dict. {RESUME_FIX}")
    return blob


def load_training_checkpoint(path: str | Path) -> dict:
    """A checkpoint that Lightning can resume from: a dict with the model state and its loops."""
    blob = load_checkpoint(path, what="Resume checkpoint")
    missing = [k for k in ("state_dict", "loops", "global_step") if k not in blob]
    if missing:
        raise UserError(
            f"Resume checkpoint {path} is not a training checkpoint of this framework: it lacks {missing} "
            f"(it holds {sorted(blob)[:10]}). Resume from a run's checkpoints/last.ckpt; to start from "
            "weights only, use model.backbone.init=<file> instead."
        )
    return blob


def load_state_dict_file(
    path: str | Path, prefix: str | None = None, what: str = "Weight file"
) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a checkpoint (its `state_dict` entry if present),
    told apart by the file's content.

    With `prefix`, keep only keys under it and strip it (e.g. `student.backbone.`)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}. Check the path, or run the job that exports it first.")
    blob = files.read_weights(path, what, "Point it at a model.safetensors export or a PyTorch checkpoint.")
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        found = type(state).__name__ if not isinstance(state, dict) else f"a dict without tensors ({sorted(state)[:8]})"
        raise UserError(f"{what} {path} holds {found}, not a state dict of tensors.")
    if prefix:
        picked = {k[len(prefix) :]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
        if not picked:
            roots = sorted({str(k).split(".")[0] + "." for k in state})[:20]
            raise UserError(f"No key of {path} starts with prefix '{prefix}'. Key roots found: {roots}.")
        state = picked
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
