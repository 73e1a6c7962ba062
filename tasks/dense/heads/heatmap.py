"""Top-down heatmap head (mmpose's TopdownHeatmapSimpleHead): deconvolutions (or none) over
the last backbone stage, or over several stages resized and concatenated (HRNetV2), then
optional 1x1 convs and a 1x1 conv to one heatmap per keypoint."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from tasks.config.types import Counts
from tasks.dense.heads.fcn import resize_concat
from tasks.dense.heads.layers import ConvBNReLU, stage_indices


def deconv_layer(in_channels: int, out_channels: int) -> nn.Sequential:
    """4x4 transposed conv with stride 2 (exactly doubles the size), BN, ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class HeatmapHead(nn.Module):
    """`deconv_channels` [256, 256, 256] (mmpose ResNet recipe: stride 32 -> 4) or [] with
    `in_indices` [1, 2, 3, 4] on HRNetV2 (the branches concatenated at stride 4)."""

    def __init__(
        self,
        channels: Sequence[int],
        reductions: Sequence[int],
        num_keypoints: int,
        in_indices: Sequence[int] = (-1,),
        deconv_channels: Counts = (256, 256, 256),
        extra_convs: int = 0,
    ):
        super().__init__()
        self.in_indices = sorted(stage_indices(in_indices, len(channels), "HeatmapHead"))
        width = sum(channels[i] for i in self.in_indices)
        layers: list[nn.Module] = []
        for out in deconv_channels:
            layers.append(deconv_layer(width, out))
            width = out
        layers += [ConvBNReLU(width, width, 1) for _ in range(extra_convs)]
        self.layers = nn.Sequential(*layers)
        self.final = nn.Conv2d(width, num_keypoints, 1)

    def forward(self, image: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.final(self.layers(resize_concat(features)))
