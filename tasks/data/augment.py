"""Batch-level augmentation on the device: random affine warps (rotation, scale,
translation, flip) drawn from an explicit generator, so a resumed run sees the same
augmentations as an uninterrupted one. Dense tasks reuse `sample_theta` and `warp`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tasks.config.types import NonNegative


@dataclass
class RandomAffine:
    degrees: NonNegative = 0.0
    translate_px: NonNegative = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    hflip: bool = False
    integer_translate: bool = False  # exact pixel shifts (padded random crop), with nearest sampling

    def sample_theta(self, n: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """(n, 2, 3) matrices mapping output to input coordinates (affine_grid convention)."""

        def uniform(lo, hi):
            return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)

        angle = uniform(-self.degrees, self.degrees) * math.pi / 180
        scale = uniform(*self.scale)
        if self.integer_translate:
            shift = torch.randint(
                -int(self.translate_px), int(self.translate_px) + 1, (2, n), generator=generator, device=device
            )
            tx, ty = shift.float() * 2 / size
        else:
            tx, ty = (
                uniform(-self.translate_px, self.translate_px) * 2 / size,
                uniform(-self.translate_px, self.translate_px) * 2 / size,
            )
        flip = (
            torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
            if self.hflip
            else torch.ones(n, device=device)
        )
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
        return theta

    def warp(self, x: torch.Tensor, theta: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        mode = mode or ("nearest" if self.integer_translate else "bilinear")
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.warp(x, self.sample_theta(x.shape[0], x.shape[-1], generator, x.device))
