"""Safe loading of checkpoints and weight files (tensors only, never pickled code; every
failure names the file and what was expected, through tasks.files), and the checkpoint
writer of every run: a checkpoint appears under its name only once it is complete, so a
kill -9 during a save never leaves a half last.ckpt for resume to trip over, and a last.ckpt
of the same state as the step's top-k file is a hard link to it, not a second write."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning import callbacks as pl_callbacks

from tasks import files
from tasks.errors import UserError

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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, but through a temporary file and a rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        if "://" in str(path) and not str(path).startswith("file://"):  # remote storage: Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        get_filesystem(path).makedirs(str(Path(path).parent), exist_ok=True)
        with files.atomic_file(path) as handle:
            torch.save(checkpoint, handle)


class ModelCheckpoint(pl_callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint, except that a `last.ckpt` due in the step that has just
    written a top-k checkpoint becomes a hard link to that file instead of a second write of the
    same state (about 90 MB for a ResNet-18 with its SGD momentum). Lightning writes last.ckpt
    only in such steps, so it never costs a write of its own. The link is made under a temporary
    name and renamed over `last.ckpt`, so a kill at any moment leaves a whole last.ckpt, and a hard
    link keeps its data when the top-k file is later removed. The state both files record names
    last.ckpt already (Lightning sets it only before the second write), so a run resumed from the
    first epoch's file goes on writing last.ckpt, not last-v1.ckpt."""

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        if self.save_last and not self.last_model_path:
            last = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
            if not self.file_exists(last, trainer):  # a stranger's last.ckpt keeps Lightning's last-v1 naming
                self.last_model_path = last
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        twin = self._last_checkpoint_saved
        same_state = self._last_global_step_saved == trainer.global_step and twin and twin != filepath
        # Every rank takes the same branch (each one's save is collective): rank 0's file system decides.
        linkable = same_state and filepath == self.last_model_path
        if not (linkable and trainer.strategy.broadcast(Path(twin).is_file())):
            return super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            temp = files.temp_name(Path(filepath))
            temp.unlink(missing_ok=True)
            os.link(twin, temp)
            os.replace(temp, filepath)
        trainer.strategy.barrier()
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:  # as Lightning's own save does
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
