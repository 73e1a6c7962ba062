"""The reassembled network: a new stem, the chosen blocks (node modules of the zoo
members), an adapter at every junction, and a pooled linear head.

Adapter between a block with C_in output channels and one expecting C_out inputs:
  maps (nchw source):  BatchNorm2d(C_in) -> Conv2d(C_in, C_out, kernel=s, stride=s) -> LeakyReLU(0.1)
  tokens -> tokens:    LayerNorm(C_in) -> Linear(C_in, C_out) -> LeakyReLU(0.1)
with s = (current spatial size) // (the size the next block saw in its own network), at
least 1: the stride follows from the spatial sizes (the original drew it at random).
Tokens leaving a map are its flattened positions (no CLS token); a transformer feeding a
CNN (only when the topology rule is off) has its tokens folded back into the grid."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from dery.layout import from_nchw, pool, to_nchw, tokens_to


class Stem(nn.Sequential):
    """Conv 7x7 (stride 2) + BN + ReLU + 3x3/2 max-pools up to `stride` (the ResNet stem
    for stride 4); a 3x3 stride-1 conv for stride 1."""

    def __init__(self, channels: int, stride: int, in_chans: int = 3):
        first = min(stride, 2)
        kernel = 7 if first == 2 else 3
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, channels, kernel, first, kernel // 2, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        remaining = stride // first
        while remaining > 1:
            layers.append(nn.MaxPool2d(3, 2, 1))
            remaining //= 2
        super().__init__(*layers)


class Adapter(nn.Module):
    """A stitching layer; `src`/`dst` are the layouts on either side."""

    def __init__(self, kind: str, c_in: int, c_out: int, stride: int, src: str, dst: str):
        super().__init__()
        self.kind, self.src, self.dst = kind, src, dst
        if kind == "conv":
            self.layers = nn.Sequential(
                nn.BatchNorm2d(c_in),
                nn.Conv2d(c_in, c_out, stride, stride, bias=False),
                nn.LeakyReLU(0.1, inplace=True),
            )
        elif kind == "linear":
            self.layers = nn.Sequential(
                nn.LayerNorm(c_in), nn.Linear(c_in, c_out, bias=False), nn.LeakyReLU(0.1, inplace=True)
            )
        else:
            raise ValueError(f"unknown adapter kind {kind}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "conv":
            return from_nchw(self.layers(to_nchw(x, self.src)), self.dst)
        return tokens_to(self.layers(x), self.src, self.dst)


class Head(nn.Module):
    """Global average pool (over tokens for transformers) + linear classifier."""

    def __init__(self, in_features: int, num_classes: int, layout: str):
        super().__init__()
        self.layout = layout
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(pool(x, self.layout))


class ReassembledNet(nn.Module):
    """stem -> block 0 -> adapter 0 -> block 1 -> ... -> head."""

    def __init__(
        self,
        stem: nn.Module,
        blocks: Sequence[nn.Module],
        adapters: Sequence[nn.Module],
        head: nn.Module,
        stem_layout: str,
    ):
        super().__init__()
        self.stem, self.stem_layout = stem, stem_layout
        self.blocks = nn.ModuleList(blocks)
        self.adapters = nn.ModuleList(adapters)
        self.head = head
        self.frozen_blocks, self.update_block_bn = False, True

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = from_nchw(self.stem(x), self.stem_layout)
        for k, block in enumerate(self.blocks):
            if k:
                x = self.adapters[k - 1](x)
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def freeze_blocks(self, frozen: bool = True, update_bn: bool = False) -> ReassembledNet:
        """Frozen blocks get no gradients. With `update_bn=False` they also stay in eval
        mode (BN keeps the zoo's statistics); True is the original's behaviour, where their
        BN running statistics follow the new data."""
        self.frozen_blocks, self.update_block_bn = frozen, update_bn
        self.blocks.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> ReassembledNet:
        super().train(mode)
        if self.frozen_blocks and not self.update_block_bn:
            self.blocks.eval()
        return self

    def new_parameters(self) -> list[nn.Parameter]:
        """Stem, adapters and head: what frozen training learns."""
        return [*self.stem.parameters(), *self.adapters.parameters(), *self.head.parameters()]


def any_resolution(model: nn.Module) -> nn.Module:
    """Let Swin blocks compute their shifted-window mask from the input (identical results
    at the native resolution), so its nodes also run at other resolutions."""
    for module in model.modules():
        if hasattr(module, "dynamic_mask") and hasattr(module, "get_attn_mask"):
            module.dynamic_mask = True
    return model


def node_block(model: nn.Module, nodes: Sequence[str]) -> nn.Sequential:
    """A copy of consecutive node modules as one block, able to run at any resolution."""
    return any_resolution(nn.Sequential(*[copy.deepcopy(model.get_submodule(n)) for n in nodes]))


def make_part(part: Mapping[str, Any]) -> nn.Module:
    """Stem, adapter or head from its entry in a plan/spec."""
    kind = part["kind"]
    if kind == "stem":
        return Stem(part["channels"], part["stride"], part.get("in_chans", 3))
    if kind == "head":
        return Head(part["in"], part["out"], part["layout"])
    return Adapter(kind, part["in"], part["out"], part["stride"], part["src"], part["dst"])
