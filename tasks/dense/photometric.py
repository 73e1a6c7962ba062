"""mmseg's PhotoMetricDistortion on a batch of [0, 1] RGB images, each step drawn per sample
with probability 1/2: brightness (+- 32 / 255), contrast (x 0.5-1.5) either first or last
(a coin decides), saturation (x 0.5-1.5) and hue (+- 18 of OpenCV's 180 hue units, an
integer in [-18, 17] as numpy's randint draws it). mmcv rounds to uint8 after every step;
here the image stays in floats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in [0, 1), saturation and value in [0, 1] of (N, 3, H, W) RGB images."""
    r, g, b = x.unbind(1)
    value, _ = x.max(1)
    delta = value - x.min(1).values
    saturation = torch.where(value > 0, delta / value.clamp(min=1e-12), torch.zeros_like(value))
    safe = delta.clamp(min=1e-12)
    hue = torch.where(value == r, (g - b) / safe, torch.where(value == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.where(delta > 0, (hue / 6) % 1.0, torch.zeros_like(hue))
    return hue, saturation, value


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`."""
    h6 = hue * 6
    sector = torch.floor(h6) % 6
    f = h6 - torch.floor(h6)
    p, q, t = value * (1 - saturation), value * (1 - saturation * f), value * (1 - saturation * (1 - f))
    table = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)]
    out = torch.zeros(hue.shape[0], 3, *hue.shape[1:], device=hue.device, dtype=hue.dtype)
    for k, channels in enumerate(table):
        chosen = (sector == k).unsqueeze(1)
        out = torch.where(chosen, torch.stack(channels, 1), out)
    return out


@dataclass
class PhotoMetricDistortion:
    brightness_delta: float = 32
    contrast_range: Sequence[float] = (0.5, 1.5)
    saturation_range: Sequence[float] = (0.5, 1.5)
    hue_delta: int = 18

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]

        def rand() -> torch.Tensor:
            return torch.rand(n, generator=generator, device=x.device).view(n, 1, 1, 1)

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * rand()

        brightness = torch.where(rand() < 0.5, uniform(-self.brightness_delta, self.brightness_delta) / 255, 0.0)
        contrast_first = rand() < 0.5
        contrast = torch.where(rand() < 0.5, uniform(*self.contrast_range), 1.0)
        saturation = torch.where(rand() < 0.5, uniform(*self.saturation_range), 1.0)
        hue = torch.where(rand() < 0.5, torch.floor(rand() * 2 * self.hue_delta) - self.hue_delta, 0.0) / 180
        x = (x + brightness).clamp(0, 1)
        x = torch.where(contrast_first, (x * contrast).clamp(0, 1), x)
        h, s, v = rgb_to_hsv(x)
        x = hsv_to_rgb((h + hue[:, 0]) % 1.0, (s * saturation[:, 0]).clamp(0, 1), v)
        return torch.where(contrast_first, x, (x * contrast).clamp(0, 1))
