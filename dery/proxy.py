"""NASWOT (Mellor et al. 2021), DeRy's training-free proxy, as the original computes it:
the network in train mode (BN on batch statistics), forward hooks on every activation,
Linear, Dropout and attention module; each output gives per-sample binary codes
c = 1[out > 0] and K += c c^T + (1 - c)(1 - c)^T; the score of a batch of B is
log|det K| / B, averaged over the batches. (The original re-registers its hooks on every
batch, adding log(b) to batch b's score for all candidates alike; here hooks are
registered once, so the ranking is the same.)"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn as nn

HOOKED = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.PReLU, nn.Hardswish, nn.ELU, nn.SELU, nn.Mish, nn.Linear, nn.Dropout)


def _hooked(module: nn.Module) -> bool:
    # timm's attention modules (ViT Attention, Swin WindowAttention) stand for the
    # original's timm Attention and mmcls ShiftWindowMSA / MultiheadAttention.
    return isinstance(module, HOOKED) or type(module).__name__ in ("Attention", "WindowAttention")


@torch.no_grad()
def naswot(net: nn.Module, batches: Iterable[torch.Tensor]) -> float:
    """Mean over batches of log|det K| / B."""
    kernel: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        codes = (out.detach().flatten(1) > 0).to(torch.float64)
        kernel["K"] += codes @ codes.T + (1 - codes) @ (1 - codes).T

    handles = [m.register_forward_hook(hook) for m in net.modules() if _hooked(m)]
    was_training = net.training
    net.train()
    scores = []
    try:
        for x in batches:
            kernel["K"] = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
            net(x)
            _, logdet = np.linalg.slogdet(kernel["K"].cpu().numpy())
            scores.append(float(logdet) / x.shape[0])
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return float(np.mean(scores))
