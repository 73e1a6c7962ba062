"""PixelRange: maps a DataModule's normalised images to the [-1, 1] range (and the
resolution) a diffusion model is trained at, whatever the student's normalisation. The
DDPM trainer and the teacher share it, so a teacher sees exactly what it was trained on."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from tasks.errors import UserError


class PixelRange(nn.Module):
    """Holds the data's `mean`/`std` (non-persistent buffers: they come from the data, not the checkpoint)."""

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.ones(1, 3, 1, 1), persistent=False)
        self.known = False
        if mean is not None and std is not None:
            self.set(mean, std)

    def set(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std):
            raise UserError(f"Normalisation mean {list(mean)} and std {list(std)} differ in length.")
        device = self.mean.device
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.known = True

    def set_from(self, datamodule, owner: str) -> None:
        """Take `mean`/`std` from a DataModule (unless given explicitly already)."""
        if self.known:
            return
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        if mean is None or std is None:
            raise UserError(
                f"{owner} needs the data's normalisation: the DataModule publishes no `mean`/`std`. "
                "Set them in the config (input_mean=[...], input_std=[...])."
            )
        self.set(mean, std)

    def to_unit(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Normalised images -> [-1, 1] (float32), resized (bilinear) to `size` if given."""
        x = (x.float() * self.std + self.mean) * 2 - 1
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def from_unit(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> normalised images."""
        return ((x.float() + 1) / 2 - self.mean) / self.std
