"""NASWOT (Mellor et al. 2021), DeRy's training-free proxy, as the original computes it:
the network in train mode (BN on batch statistics), forward hooks on every activation,
Linear, Dropout and attention module; each hooked output gives per-sample binary codes
c = 1[out > 0] and K += c c^T + (1 - c)(1 - c)^T; the score of a batch of B is
log|det K| / B, averaged over the batches.

Differences from the original, for every family to count:
- codes are laid out per sample of the *network's* batch: windowed attention (Swin) emits
  (B * windows, N, C), batch-major, and is reshaped to (B, windows * N * C), where the
  original's `flatten(1)` took every window for a sample;
- `hooks="default"` also hooks SiLU / Swish (EfficientNet's blocks), which the
  original's set (`hooks="original"`) misses; timm's own GELU / Mish / HardSwish / PReLU
  classes count as those functions in both sets;
- the original re-registers its hooks on every batch, adding log(b) to batch b's score for
  all candidates alike; here hooks are registered once (the same ranking).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

ATTENTION = ("Attention", "WindowAttention")  # timm ViT / Swin, for the original's Attention, ShiftWindowMSA
HOOK_SETS = ("default", "original")


def _classes(hooks: str) -> tuple[type, ...]:
    from timm.layers import activations as timm_act
    from timm.layers import activations_me as timm_me

    original = (
        nn.ReLU,
        nn.LeakyReLU,
        nn.GELU,
        nn.PReLU,
        nn.Hardswish,
        nn.ELU,
        nn.SELU,
        nn.Mish,
        nn.Linear,
        nn.Dropout,
        timm_act.GELU,
        timm_act.GELUTanh,
        timm_act.QuickGELU,
        timm_act.Mish,
        timm_act.HardSwish,
        timm_act.PReLU,
        timm_me.MishMe,
        timm_me.HardSwishMe,
    )
    if hooks == "original":
        return original
    if hooks == "default":
        return original + (nn.SiLU, timm_act.Swish, timm_me.SwishMe)
    raise ValueError(f"proxy hooks '{hooks}' is unknown; use one of {list(HOOK_SETS)}")


def hooked_modules(module: nn.Module, hooks: str = "default") -> list[nn.Module]:
    classes = _classes(hooks)
    return [m for m in module.modules() if isinstance(m, classes) or type(m).__name__ in ATTENTION]


def batch_codes(out: torch.Tensor, batch: int) -> torch.Tensor:
    """(batch, D) signs (+1 where out > 0, else -1) of one hooked output, per sample. A
    leading dim of batch * windows (batch-major, as timm's window_partition lays it out)
    folds into the sample's row."""
    if out.dim() == 0 or out.shape[0] % batch:
        raise ValueError(
            f"a hooked output of shape {tuple(out.shape)} does not lead with the batch ({batch}) "
            "or a batch-major multiple of it"
        )
    return torch.where(out.detach().reshape(batch, -1) > 0, 1.0, -1.0)


class CodeKernel:
    """Forward hooks on the hooked modules of `modules` that add every output's code
    kernel to `self.kernel` (a (B, B) float64 tensor the caller sets before a forward).
    With signs s = 2c - 1, c c^T + (1 - c)(1 - c)^T = (D + s s^T) / 2 (exact integers)."""

    def __init__(self, modules: Sequence[nn.Module], hooks: str = "default"):
        self.kernel: torch.Tensor | None = None
        targets = {id(m): m for module in modules for m in hooked_modules(module, hooks)}
        self.handles = [m.register_forward_hook(self._hook) for m in targets.values()]

    def _hook(self, _module, _inputs, output) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        signs = batch_codes(out, self.kernel.shape[0])
        exact = signs.shape[1] < 2**24  # float32 sums of +-1 are exact below 2^24
        signs = signs.to(torch.float32 if exact else torch.float64)
        self.kernel += ((signs @ signs.T).to(torch.float64) + signs.shape[1]) / 2

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def log_det_score(kernel: torch.Tensor) -> float:
    """log|det K| / B of one batch's kernel."""
    _, logdet = np.linalg.slogdet(kernel.cpu().numpy())
    return float(logdet) / kernel.shape[0]


@torch.no_grad()
def naswot(net: nn.Module, batches: Iterable[torch.Tensor], hooks: str = "default") -> float:
    """Mean over batches of log|det K| / B, the network in train mode (restored after)."""
    recorder = CodeKernel([net], hooks)
    was_training = net.training
    net.train()
    scores = []
    try:
        for x in batches:
            recorder.kernel = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
            net(x)
            scores.append(log_det_score(recorder.kernel))
    finally:
        recorder.remove()
        net.train(was_training)
    return float(np.mean(scores))
