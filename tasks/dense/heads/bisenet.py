"""BiSeNetV1 (Yu et al., 2018) as mmseg builds it, over any timm backbone: the context path
refines the backbone's last two stages (attention refinement + global context), a shallow
spatial path keeps detail at the resolution of the third-last stage, a feature fusion
module joins them, and FCN blocks decode the fused map (main output) and the two context
maps (auxiliary outputs, used only for the training loss)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from tasks.config.types import Count, Counts, Probability
from tasks.dense.heads.fcn import FCNBlock
from tasks.dense.heads.layers import ConvBNReLU
from tasks.errors import UserError


class SpatialPath(nn.Module):
    """7x7, 3x3, 3x3, 1x1 conv-BN-ReLU; the first `downsample` of the first three have stride 2."""

    def __init__(self, channels: Sequence[int], downsample: int):
        super().__init__()
        c = list(channels)
        if len(c) != 4:
            raise UserError(f"BiSeNetV1 spatial_channels needs 4 values (mmseg: [64, 64, 64, 128]), got {c}.")
        strides = [2 if i < downsample else 1 for i in range(3)]
        self.layers = nn.Sequential(
            ConvBNReLU(3, c[0], 7, strides[0]),
            ConvBNReLU(c[0], c[1], 3, strides[1]),
            ConvBNReLU(c[1], c[2], 3, strides[2]),
            ConvBNReLU(c[2], c[3], 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AttentionRefinement(nn.Module):
    """3x3 conv, then channel attention from the globally pooled map."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x * self.attention(x)


class ContextPath(nn.Module):
    """From the last two backbone stages (x16, x32 in the paper) to context maps at the
    third-last stage's resolution (x8) and at the second-last stage's (x16)."""

    def __init__(self, in16: int, in32: int, channels: int):
        super().__init__()
        self.arm16, self.arm32 = AttentionRefinement(in16, channels), AttentionRefinement(in32, channels)
        self.head16, self.head32 = ConvBNReLU(channels, channels), ConvBNReLU(channels, channels)
        self.global_context = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(in32, channels, 1))

    def forward(self, x16: torch.Tensor, x32: torch.Tensor, size8: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        context32 = self.arm32(x32) + self.global_context(x32)
        up32 = self.head32(F.interpolate(context32, size=x16.shape[-2:], mode="nearest"))
        up16 = self.head16(F.interpolate(self.arm16(x16) + up32, size=size8, mode="nearest"))
        return up16, up32


class FeatureFusion(nn.Module):
    """Concatenate, 1x1 conv, then add a channel-attention-weighted copy."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 1)
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(out_channels, out_channels, 1), nn.Sigmoid())

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        fused = self.conv(torch.cat([spatial, context], dim=1))
        return fused + fused * self.attention(fused)


class BiSeNetV1Head(nn.Module):
    """Returns [main logits, aux logits (x8 context), aux logits (x16 context)], each at its
    own resolution; the LightningModule upsamples them to the input size.

    Defaults are mmseg's BiSeNetV1-R18 (context 128, fusion 256, aux 64); R50 uses
    spatial_channels [256, 256, 256, 512], context_channels 512, fuse_channels 1024,
    aux_channels 256."""

    def __init__(
        self,
        channels: Sequence[int],
        reductions: Sequence[int],
        num_classes: int,
        spatial_channels: Counts = (64, 64, 64, 128),
        context_channels: Count = 128,
        fuse_channels: Count = 256,
        aux_channels: Count = 64,
        dropout: Probability = 0.1,
        aux: bool = True,
    ):
        super().__init__()
        if len(channels) < 3:
            raise UserError(f"BiSeNetV1 needs a backbone with at least 3 stages; this one has {len(channels)}.")
        n = len(channels)
        self.in_indices = [n - 2, n - 1]
        downsample = math.log2(reductions[n - 3])
        if downsample != int(downsample) or downsample > 3:
            raise UserError(
                f"BiSeNetV1: the backbone's third-last stage has stride {reductions[n - 3]}; "
                "the spatial path reaches strides 1, 2, 4 or 8. "
                "Use a backbone whose third-last stage has one of those strides."
            )
        self.spatial = SpatialPath(spatial_channels, int(downsample))
        self.context = ContextPath(channels[n - 2], channels[n - 1], context_channels)
        self.fusion = FeatureFusion(spatial_channels[-1] + context_channels, fuse_channels)
        self.decode = FCNBlock(fuse_channels, fuse_channels, num_classes, num_convs=1, dropout=dropout)
        self.aux = (
            nn.ModuleList(
                [FCNBlock(context_channels, aux_channels, num_classes, num_convs=1, dropout=dropout) for _ in range(2)]
            )
            if aux
            else None
        )

    def forward(self, image: torch.Tensor, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        spatial = self.spatial(image)
        context8, context16 = self.context(features[0], features[1], spatial.shape[-2:])
        outputs = [self.decode(self.fusion(spatial, context8))]
        if self.aux is not None and self.training:
            outputs += [head(c) for head, c in zip(self.aux, (context8, context16))]
        return outputs
