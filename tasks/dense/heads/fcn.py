"""FCN head (mmseg's FCNHead): convs on one feature map (or several, resized to the finest
and concatenated), dropout, a 1x1 classifier. The light segmentation head, and the decode
and auxiliary heads of BiSeNetV1."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from tasks.config.types import Count, Probability
from tasks.dense.heads.layers import ConvBNReLU, stage_indices


class FCNBlock(nn.Module):
    """num_convs 3x3 conv-BN-ReLU, optional concat of the input, dropout, 1x1 conv to classes."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        num_convs: Count = 1,
        concat_input: bool = False,
        dropout: Probability = 0.1,
    ):
        super().__init__()
        layers = [ConvBNReLU(in_channels if i == 0 else channels, channels) for i in range(num_convs)]
        self.convs = nn.Sequential(*layers) if layers else nn.Identity()
        out = channels if num_convs else in_channels
        self.concat = ConvBNReLU(in_channels + out, channels) if concat_input and num_convs else None
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(out, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        if self.concat is not None:
            y = self.concat(torch.cat([x, y], dim=1))
        return self.classifier(self.dropout(y))


def resize_concat(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Resize every map to the first (finest) one's size and concatenate the channels."""
    size = features[0].shape[-2:]
    resized = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]]
    return torch.cat([features[0], *resized], dim=1)


class FCNHead(nn.Module):
    """Segmentation head on backbone stages `in_indices` (default: the last stage)."""

    def __init__(
        self,
        channels: Sequence[int],
        reductions: Sequence[int],
        num_classes: int,
        in_indices: Sequence[int] = (-1,),
        head_channels: Count = 256,
        num_convs: Count = 2,
        concat_input: bool = True,
        dropout: Probability = 0.1,
    ):
        super().__init__()
        self.in_indices = sorted(stage_indices(in_indices, len(channels), "FCNHead"))
        width = sum(channels[i] for i in self.in_indices)
        self.block = FCNBlock(width, head_channels, num_classes, num_convs, concat_input, dropout)

    def forward(self, image: torch.Tensor, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.block(resize_concat(features))]
