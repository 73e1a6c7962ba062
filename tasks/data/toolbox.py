"""timm's training-recipe toolbox as seeded batch augmentations: RandAugment (timm's
`rand_augment_transform`, per image), RandomErasing (timm's, on normalised batches) and
Mixup/CutMix (timm's `Mixup`, in the classifier, with soft targets and label smoothing).

timm draws from the global `random`, `numpy` and `torch` generators. Each call here seeds
them from the batch's own generator (seed, stream, rank, epoch, batch index) and restores them
afterwards, so a resumed run draws the same augmentations as an uninterrupted one."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from tasks.config.types import Count, Probability
from tasks.errors import UserError


@contextlib.contextmanager
def seeded_globals(generator: torch.Generator, device: torch.device | None = None) -> Iterator[None]:
    """Seed Python's, numpy's and torch's global generators from `generator`, then restore them."""
    key = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        random.seed(key)
        np.random.seed(key % 2**32)
        torch.manual_seed(key)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def posterize_keeping_zero_bits(img, bits_to_keep, **_):
    """timm's posterize, with 0 bits kept meaning a black image as in the Pillow the DeiT-style
    recipes ran on: `inc1` reaches 0 bits at magnitude 10, which newer Pillow refuses."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


@dataclass
class RandAugment:
    """timm's RandAugment (e.g. `rand-m9-mstd0.5-inc1`) on every image of a [0, 1] batch.
    It runs on PIL images, so a GPU batch makes a round trip to the CPU."""

    config: str = "rand-m9-mstd0.5-inc1"
    mean: Sequence[float] | None = None  # fill colour of geometric ops (timm's img_mean); None: the data's mean

    def __post_init__(self):
        from timm.data import rand_augment_transform

        if not self.config.startswith("rand"):
            raise UserError(f"RandAugment config must look like 'rand-m9-mstd0.5-inc1', got '{self.config}'.")
        self._factory = rand_augment_transform
        self._by_size: dict[int, object] = {}

    def _transform(self, size: int):
        if size not in self._by_size:  # translations are relative to the image size, as timm sets them
            mean = tuple(self.mean) if self.mean is not None else (0.5, 0.5, 0.5)
            hparams = {"img_mean": tuple(round(255 * m) for m in mean), "translate_const": int(size * 0.45)}
            transform = self._factory(self.config, hparams)
            for op in transform.ops:
                if op.name.startswith("Posterize"):
                    op.aug_fn = posterize_keeping_zero_bits
            self._by_size[size] = transform
        return self._by_size[size]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from PIL import Image

        transform = self._transform(x.shape[-1])
        pixels = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = []
        with seeded_globals(generator):
            for image in pixels:
                pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
                array = np.asarray(transform(pil), dtype=np.uint8)
                out.append(array[..., None] if array.ndim == 2 else array)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0


@dataclass
class RandomErasing:
    """timm's RandomErasing on a normalised batch (`mode='pixel'` fills with N(0, 1) noise)."""

    probability: Probability = 0.25
    mode: str = "pixel"
    min_count: int = 1
    max_count: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.probability <= 1.0:
            raise UserError(f"RandomErasing probability must be in [0, 1], got {self.probability}.")
        if self.mode not in ("const", "rand", "pixel"):
            raise UserError(f"RandomErasing mode must be const, rand or pixel, got '{self.mode}'.")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from timm.data.random_erasing import RandomErasing as TimmErasing

        erase = TimmErasing(
            self.probability, mode=self.mode, min_count=self.min_count, max_count=self.max_count, device=x.device
        )
        with seeded_globals(generator, x.device):
            return erase(x.clone())


@dataclass
class Compose:
    """Several batch augmentations in order (e.g. RandomAffine, then RandAugment)."""

    steps: list = field(default_factory=list)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in self.steps:
            x = step(x, generator)
        return x


@dataclass
class MixupCutmix:
    """timm's Mixup/CutMix with label smoothing; returns mixed images and soft targets."""

    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: Probability = 1.0
    switch_prob: Probability = 0.5
    mode: str = "batch"
    label_smoothing: Probability = 0.1
    num_classes: Count = 10

    def __post_init__(self):
        from timm.data import Mixup

        for name in ("prob", "switch_prob", "label_smoothing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"mixup.{name} must be in [0, 1], got {getattr(self, name)}.")
        if self.mode not in ("batch", "pair", "elem"):
            raise UserError(f"mixup.mode must be batch, pair or elem, got '{self.mode}'.")
        self._mixup = Mixup(
            mixup_alpha=self.mixup_alpha,
            cutmix_alpha=self.cutmix_alpha,
            prob=self.prob,
            switch_prob=self.switch_prob,
            mode=self.mode,
            label_smoothing=self.label_smoothing,
            num_classes=self.num_classes,
        )

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(x) % 2:
            raise UserError(
                f"Mixup/CutMix needs an even batch size; this batch has {len(x)} images. "
                "Set data.batch_size to an even number."
            )
        with seeded_globals(generator, x.device):
            return self._mixup(x.clone(), y)
