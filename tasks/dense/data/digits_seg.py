"""digits_seg: a segmentation set made from the bundled digits (real scans, no download).
Each 32x32 image is a grid of digits (2x2 by default, each a 16x16 upsampling of an 8x8
scan); every ink pixel takes its digit's class and the rest is background.

Classes (11): 0 = background, c = digit c - 1 for c in 1..10 (class 1 is the digit 0,
class 10 the digit 9). Pixels whose intensity lies within `ignore_band` of the ink
threshold are ambiguous and marked 255 (ignored by the loss and the metrics)."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from tasks.config.types import AtLeastOne, Probability, Seed
from tasks.data.digits import load_digit_images, split_indices
from tasks.dense.data.base import SegmentationDataModule

CLASS_NAMES = ("background", *(f"digit{d}" for d in range(10)))
IGNORE = 255


def digit_masks(images: torch.Tensor, labels: torch.Tensor, threshold: float, ignore_band: float) -> torch.Tensor:
    """(N, H, W) label maps of single-digit images (N, 3, H, W) in [0, 1]."""
    ink = images[:, 0]
    masks = torch.where(ink > threshold, labels.view(-1, 1, 1) + 1, 0)
    if ignore_band > 0:
        masks = torch.where((ink - threshold).abs() < ignore_band, IGNORE, masks)
    return masks.long()


def mosaics(images: torch.Tensor, masks: torch.Tensor, grid: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """As many grid x grid mosaics as there are digits; every digit appears once in every cell
    position (one fixed-seed permutation per cell)."""
    n, _, s, _ = images.shape
    g = torch.Generator().manual_seed(seed)
    out_x = torch.zeros(n, 3, grid * s, grid * s)
    out_m = torch.zeros(n, grid * s, grid * s, dtype=torch.long)
    for cell in range(grid * grid):
        order = torch.randperm(n, generator=g)
        r, c = divmod(cell, grid)
        out_x[:, :, r * s : (r + 1) * s, c * s : (c + 1) * s] = images[order]
        out_m[:, r * s : (r + 1) * s, c * s : (c + 1) * s] = masks[order]
    return out_x, out_m


class DigitsSegDataModule(SegmentationDataModule):
    class_names = CLASS_NAMES
    # Statistics of the 2x2 mosaics' training split (grey replicated to RGB).
    mean = (0.3055, 0.3055, 0.3055)
    std = (0.3192, 0.3192, 0.3192)

    def __init__(
        self,
        image_size: AtLeastOne = 32,
        grid: int = 2,
        threshold: float = 0.4,
        ignore_band: float = 0.1,
        val_fraction: Probability = 0.15,
        test_fraction: Probability = 0.15,
        split_seed: Seed = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if image_size % grid:
            raise ValueError(f"image_size ({image_size}) must be a multiple of grid ({grid}).")
        self.image_size, self.grid, self.threshold, self.ignore_band = image_size, grid, threshold, ignore_band
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        # Split the digits first (the classifier's split), so no scan is in two splits.
        x, y = load_digit_images(self.image_size // self.grid)
        m = digit_masks(x, y, self.threshold, self.ignore_band)
        splits = split_indices(y, self.val_fraction, self.test_fraction, self.split_seed)
        built = {}
        for offset, name in enumerate(("train", "val", "test")):
            idx = splits[name]
            built[name] = TensorDataset(*mosaics(x[idx], m[idx], self.grid, self.split_seed * 10 + offset))
        self.train_set, self.val_set, self.test_set = built["train"], built["val"], built["test"]
