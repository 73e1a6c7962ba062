"""Tensor layouts between nodes (`nchw`, `tokens`, `nhwc`): global pooling, channel count,
spatial grid of a node shape (without the batch dim), and conversions to and from NCHW."""

from __future__ import annotations

import math

import torch


def pool(x: torch.Tensor, layout: str) -> torch.Tensor:
    """(B, C) global average: over H, W for maps, over all tokens (a CLS token included,
    as the original does) for transformers."""
    if layout == "nchw":
        return x.mean(dim=(2, 3))
    if layout == "nhwc":
        return x.mean(dim=(1, 2))
    return x.mean(dim=1)


def channels(shape: tuple[int, ...], layout: str) -> int:
    return shape[0] if layout == "nchw" else shape[-1]


def grid(shape: tuple[int, ...], layout: str, prefix_tokens: int = 0) -> tuple[int, int]:
    """(H, W) of a node shape; token sequences must hold a square grid after the prefix tokens."""
    if layout == "nchw":
        return shape[1], shape[2]
    if layout == "nhwc":
        return shape[0], shape[1]
    n = shape[0] - prefix_tokens
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} tokens do not form a square grid")
    return side, side


def to_nchw(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "nchw":
        return x
    if layout == "nhwc":
        return x.permute(0, 3, 1, 2)
    side = math.isqrt(x.shape[1])
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


def from_nchw(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "nchw":
        return x
    if layout == "nhwc":
        return x.permute(0, 2, 3, 1)
    return x.flatten(2).transpose(1, 2)


def tokens_to(x: torch.Tensor, src: str, dst: str) -> torch.Tensor:
    """Between the two token layouts (B, N, C) and (B, H, W, C)."""
    if src == dst:
        return x
    if src == "nhwc":
        return x.flatten(1, 2)
    side = math.isqrt(x.shape[1])
    return x.reshape(x.shape[0], side, side, x.shape[2])
