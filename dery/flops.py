"""FLOPs of one eval-mode forward with torch's FlopCounterMode (2 FLOPs per multiply-add;
convolutions, matmuls and attention included). Parameters are counted by
tasks.models.backbones.count_parameters."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(FLOPs, output) of one forward of `x` under no_grad."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = module(x)
    return int(counter.get_total_flops()), out
