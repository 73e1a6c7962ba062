"""Reading intermediate features: forward hooks on dotted module names (any nn.Module,
e.g. a diffusers U-Net), optionally stopping the forward once the last tap has fired, and
timm's `forward_intermediates` for students."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from tasks.errors import UserError


class _StopForward(Exception):
    """Raised from a hook to end a forward early; never escapes FeatureTap."""


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """`model.get_submodule(name)`, failing with the valid names when it does not exist."""
    model = getattr(model, "module", model)  # unwrap DDP
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        listing = close or names[-40:]
        raise UserError(
            f"No module named '{name}' in {type(model).__name__}. "
            f"{'Closest' if close else 'Some valid'} names: {listing}. "
            f"All {len(names)} names: [n for n, _ in model.named_modules()]."
        ) from None


class FeatureTap:
    """Capture the outputs of named modules during one forward.

    `stop_early=True` aborts the forward once every tapped module has fired, so the
    layers after the last tap never run (a truncated forward)."""

    def __init__(self, model: nn.Module, names: Sequence[str], stop_early: bool = False):
        self.names = list(names)
        self.stop_early = stop_early
        self._store: dict[str, torch.Tensor] = {}
        self._handles = [resolve_module(model, n).register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name: str) -> Callable:
        def hook(_module, _inputs, output):
            self._store[name] = output[0] if isinstance(output, (tuple, list)) else output
            if self.stop_early and len(self._store) == len(self.names):
                raise _StopForward

        return hook

    def __call__(self, forward: Callable[[], object]) -> dict[str, torch.Tensor]:
        """Run `forward()` and return {name: output}; storage is cleared every call."""
        self._store = {}
        try:
            forward()
        except _StopForward:
            pass
        missing = [n for n in self.names if n not in self._store]
        if missing:
            raise RuntimeError(f"Tapped modules {missing} did not run during the forward.")
        out, self._store = self._store, {}
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def stage_features(
    model: nn.Module, x: torch.Tensor, indices: int | Sequence[int], stop_early: bool = True
) -> list[torch.Tensor]:
    """NCHW features of a timm model at `feature_info` indices (negative counts from the end).

    `stop_early` ends the forward at the last wanted stage, so later stages never run."""
    n = len(model.feature_info)
    wanted = [indices] if isinstance(indices, int) else list(indices)
    bad = [i for i in wanted if not -n <= i < n]
    if bad:
        raise UserError(f"Feature index {bad} out of range for {type(model).__name__}: it has {n} stages (0..{n - 1}).")
    return model.forward_intermediates(
        x, indices=[i % n for i in wanted], intermediates_only=True, stop_early=stop_early
    )


def stage_channels(model: nn.Module, index: int) -> int:
    return model.feature_info.channels()[index]
