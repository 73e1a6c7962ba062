"""Instantiate config nodes; a failure becomes one UserError that names the config node."""

from __future__ import annotations

from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from tasks.errors import UserError


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def build(path: str, node: DictConfig, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(node)` with plain containers for arguments (so saved
    hyperparameters stay loadable with weights_only=True)."""
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = _root_cause(err)
        if isinstance(cause, UserError):
            raise cause from None
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserError(
            f"Could not build '{path}' ({node.get('_target_')}): {type(cause).__name__}: {message}. "
            f"Fix the values under '{path}'."
        ) from None


def build_group(path: str, node: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a group (callbacks, loggers); null entries are off."""
    if not node:
        return []
    return [
        build(f"{path}.{key}", value)
        for key, value in node.items()
        if isinstance(value, DictConfig) and "_target_" in value
    ]


def trainer_plugins(trainer: DictConfig) -> dict[str, Any]:
    """The checkpoint writer every run uses (a temp file, then a rename: a kill -9 never leaves
    a half last.ckpt), unless the config brings its own plugins or a sharded strategy writes
    checkpoints its own way."""
    from tasks.training.checkpointing import AtomicCheckpointIO

    strategy = str(trainer.get("strategy", "auto"))
    if trainer.get("plugins") is not None or strategy.startswith(("fsdp", "deepspeed")):
        return {}
    return {"plugins": [AtomicCheckpointIO()]}
