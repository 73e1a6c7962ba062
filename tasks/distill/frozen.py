"""The frozen-teacher contract: eval mode always, no grad, outside the optimizer, the
checkpoint, the saved hyperparameters and DDP's gradient sync."""

from __future__ import annotations

import torch
import torch.nn as nn


class FrozenTeacher(nn.Module):
    """Wraps a teacher. `.train()` cannot switch it out of eval mode; calls run under no_grad."""

    def __init__(self, module: nn.Module, dtype: torch.dtype | None = None, channels_last: bool = False):
        super().__init__()
        self.module = module.eval().requires_grad_(False)
        if dtype is not None:
            self.module.to(dtype=dtype)
        if channels_last:
            self.module.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> FrozenTeacher:
        return super().train(False)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.module(*args, **kwargs)


def attach_frozen(owner: nn.Module, name: str, teacher: nn.Module, **kwargs) -> FrozenTeacher:
    """Set `owner.<name>` to a FrozenTeacher that is dropped from `owner.state_dict()` and
    tolerated as missing on load. Its parameters never require grad, so DDP never syncs them."""
    wrapped = FrozenTeacher(teacher, **kwargs)
    setattr(owner, name, wrapped)
    prefix = name + "."

    def drop_teacher(module, state_dict, state_prefix, local_metadata):
        for key in [k for k in state_dict if k.startswith(state_prefix + prefix)]:
            del state_dict[key]
        return state_dict

    def allow_missing_teacher(module, incompatible_keys):
        missing = incompatible_keys.missing_keys
        missing[:] = [k for k in missing if not k.startswith(prefix)]

    owner._register_state_dict_hook(drop_teacher)
    owner.register_load_state_dict_post_hook(allow_missing_teacher)
    return wrapped


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters an optimizer should see (a frozen teacher's never require grad)."""
    return [p for p in module.parameters() if p.requires_grad]
