"""mmpose's top-down training augmentation (TopDownRandomFlip + TopDownGetRandomScaleRotation
+ TopDownAffine) as one warp per sample on the device.

mmpose warps the original image once. Here the loader cuts a context crop `context` times
wider than the face crop at the same pixel density, centred on the same point, and the
warp samples the output crop from it: the output shows image content where mmpose's does
(no black corners from a rotation), at the cost of a second bilinear resampling.

Both crops put the box centre at pixel S / 2 (mmpose's get_affine_transform), and a flip
mirrors the output about x = S / 2, as mmpose's flip of the original image does."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class TopDownScaleRotation:
    rot_factor: float = 30.0  # rotation N(0, rot_factor) degrees, clipped to +-2 rot_factor ...
    rot_prob: float = 0.6  # ... applied with this probability (else 0)
    scale_factor: float = 0.25  # crop scale 1 + N(0, scale_factor), clipped to 1 +- scale_factor (> 1 zooms out)
    flip_prob: float = 0.5
    context: float = 2.0  # input crop side / output crop side

    def sample_theta(self, n: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """(n, 2, 3) affine_grid matrices from the output crop to the `size`-pixel context crop."""

        def randn() -> torch.Tensor:
            return torch.randn(n, generator=generator, device=device)

        def rand() -> torch.Tensor:
            return torch.rand(n, generator=generator, device=device)

        flip = torch.where(rand() <= self.flip_prob, -1.0, 1.0)
        scale = (randn() * self.scale_factor + 1).clamp(1 - self.scale_factor, 1 + self.scale_factor)
        angle = (randn() * self.rot_factor).clamp(-2 * self.rot_factor, 2 * self.rot_factor)
        angle = torch.where(rand() <= self.rot_prob, angle, torch.zeros_like(angle)) * torch.pi / 180
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        # context pixel q = C/2 + A (x - S/2), A = scale * R(angle) * diag(flip, 1)
        linear = torch.stack([torch.stack([cos * flip, -sin], 1), torch.stack([sin * flip, cos], 1)], 1)
        shift = (1 - linear.sum(-1)) / size
        return torch.cat([linear / self.context, shift.unsqueeze(-1)], dim=-1)

    def output_size(self, size: int) -> int:
        return round(size / self.context)

    def warp(self, x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        out = self.output_size(x.shape[-1])
        grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], out, out], align_corners=False)
        return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
