"""mmseg 0.30's segmentation training pipeline on the device, one sample at a time as mmseg
runs it, from the loader's (image, label map) at the base size B (512 for CelebAMask-HQ):

1. Resize by a ratio r ~ U(ratio_range) to n = int(B * r) (image bilinear as cv2, label map
   with cv2's nearest rule: source index floor(i * B / n)).
2. RandomCrop of crop_size: offsets uniform in [0, max(n - crop, 0)]; with cat_max_ratio < 1
   up to 10 redraws until the crop holds more than one class and no class covers
   cat_max_ratio of its labelled pixels (ignored pixels left out), else the 11th draw.
3. RandomFlip with flip_prob: image and label map are mirrored (no class is renamed).
4. PhotoMetricDistortion (optional).
5. Pad to crop_size at the bottom and right: the image with `pad_value` (the data's mean
   colour: mmseg pads with 0 after normalising), the label map with the ignore index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from tasks.dense.data.base import PairAugment
from tasks.dense.photometric import PhotoMetricDistortion


@dataclass
class ResizeCropFlip(PairAugment):
    crop_size: int = 448
    ratio_range: Sequence[float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: PhotoMetricDistortion | None = field(default_factory=PhotoMetricDistortion)
    ignore_index: int = 255
    pad_value: Sequence[float] = (0.0, 0.0, 0.0)

    def __call__(
        self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, device = x.shape[0], x.device
        base, crop = x.shape[-1], self.crop_size

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(n, *shape, generator=generator, device=device)

        lo, hi = self.ratio_range
        sizes = (base * (lo + (hi - lo) * rand())).long()  # int(B * r)
        margins = (sizes - crop).clamp(min=0)
        offsets = (rand(11, 2) * (margins[:, None, None] + 1)).long()  # randint(0, margin + 1) per candidate
        flips = rand() < self.flip_prob
        chosen = self._choose_crops(labels, sizes, offsets)
        valid = torch.minimum(sizes, torch.tensor(crop, device=device))  # crop side before padding

        out = torch.arange(crop, device=device)
        inside = out[None] < valid[:, None]  # (N, crop)
        cols = torch.where(flips[:, None], valid[:, None] - 1 - out[None], out[None]) + chosen[:, 1:2]
        rows = out[None] + chosen[:, 0:1]
        # Image: bilinear at the resized pixel centres, clamped at the border (cv2.resize).
        scale = (2.0 / sizes.float())[:, None]
        gx, gy = (cols.float() + 0.5) * scale - 1, (rows.float() + 0.5) * scale - 1
        grid = torch.stack([gx[:, None, :].expand(n, crop, crop), gy[:, :, None].expand(n, crop, crop)], -1)
        image = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)
        if self.photometric is not None:
            image = self.photometric(image, generator)
        mask = inside[:, :, None] & inside[:, None, :]  # (N, crop, crop)
        pad = torch.tensor(self.pad_value, device=device, dtype=image.dtype).view(1, 3, 1, 1)
        image = torch.where(mask[:, None], image, pad)
        label = self._nearest(labels, rows, cols, sizes)
        label = torch.where(mask, label, torch.full_like(label, self.ignore_index))
        return image, label

    @staticmethod
    def _nearest(labels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """labels resized to `sizes` with cv2's nearest rule, read at (rows, cols) of each sample."""
        base = labels.shape[-1]
        src_r = (rows * base // sizes[:, None]).clamp(max=base - 1)
        src_c = (cols * base // sizes[:, None]).clamp(0, base - 1)
        picked = labels.gather(1, src_r[:, :, None].expand(-1, -1, base))  # (N, crop, B)
        return picked.gather(2, src_c[:, None, :].expand(-1, rows.shape[1], -1))

    def _choose_crops(self, labels: torch.Tensor, sizes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """(N, 2) offsets (row, col): mmseg's cat_max_ratio redraws, candidate by candidate."""
        n, device, crop = labels.shape[0], labels.device, self.crop_size
        chosen = offsets[:, 10].clone()
        if self.cat_max_ratio >= 1:
            return offsets[:, 0].clone()
        open_ = torch.ones(n, dtype=torch.bool, device=device)
        out = torch.arange(crop, device=device)
        valid = torch.minimum(sizes, torch.tensor(crop, device=device))
        inside = out[None] < valid[:, None]
        for k in range(10):
            rows, cols = out[None] + offsets[:, k, 0:1], out[None] + offsets[:, k, 1:2]
            window = self._nearest(labels, rows, cols, sizes)
            counted = inside[:, :, None] & inside[:, None, :] & (window != self.ignore_index)
            keys = (torch.arange(n, device=device).view(n, 1, 1) * 256 + window.clamp(0, 255))[counted]
            counts = torch.bincount(keys, minlength=n * 256).view(n, 256)
            classes = (counts > 0).sum(1)
            share = counts.amax(1).double() / counts.sum(1).clamp(min=1).double()
            good = open_ & (classes > 1) & (share < self.cat_max_ratio)
            chosen[good] = offsets[good, k]
            open_ &= ~good
            if not open_.any():
                break
        return chosen
