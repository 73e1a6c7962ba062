"""Building blocks of the dense heads: conv + BN + ReLU, and the rule that picks backbone
stages by index."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from tasks.errors import UserError


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def stage_indices(indices: Sequence[int], num_stages: int, head: str) -> list[int]:
    """Non-negative stage indices; the last stage must be among them, because under DDP every
    backbone parameter has to receive a gradient."""
    resolved = []
    for i in indices:
        if not -num_stages <= i < num_stages:
            raise UserError(
                f"{head}: stage index {i} out of range; the backbone has {num_stages} stages "
                f"(0..{num_stages - 1} or -1..-{num_stages})."
            )
        resolved.append(i % num_stages)
    if num_stages - 1 not in resolved:
        raise UserError(
            f"{head}: the stages {list(indices)} leave out the backbone's last stage; include -1 "
            "(a backbone layer that feeds no output gets no gradient, which DDP refuses)."
        )
    return resolved
