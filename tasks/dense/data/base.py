"""Bases of the dense DataModules: train-time augmentation that moves label maps and
keypoints together with the image (one affine warp per sample, on the device, from the
foundation's seeded generator), and a signature that lists every keyword argument so the
start-up config check catches misspelt keys."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch

from tasks.data.base import ImageDataModule
from tasks.dense.geometry import center_crop, is_flipped, swap_labels, swap_on_flip, transform_keypoints, warp_labels


def _keyword_parameters(cls: type) -> list[inspect.Parameter]:
    """Explicit keyword arguments of the __init__ of `cls` and of its bases up to ImageDataModule."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            for p in list(inspect.signature(init).parameters.values())[1:]:
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in params:
                    params[p.name] = p.replace(kind=p.KEYWORD_ONLY)
        if klass is ImageDataModule:
            break
    return list(params.values())


class DenseDataModule(ImageDataModule):
    """Subclasses forward **kwargs to ImageDataModule; their published signature still names
    every accepted key (recomputed for each subclass)."""

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls.__signature__ = inspect.Signature(_keyword_parameters(cls))

    def _theta(self, x: torch.Tensor) -> torch.Tensor:
        return self.batch_augment.sample_theta(x.shape[0], x.shape[-1], self._augment_generator(x.device), x.device)


class PairAugment(ABC):
    """A train-time augmentation that takes and returns (images, label maps) itself, with
    the DataModule's seeded generator (e.g. mmseg's resize-crop-flip pipeline)."""

    @abstractmethod
    def __call__(
        self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented ([0, 1] images, label maps)."""


class SegmentationDataModule(DenseDataModule):
    """Datasets yield ([0, 1] image (3, H, W), int64 label map (H, W)); 255 is ignored.
    `batch_augment` is a RandomAffine-like warp (then the centre `crop_size` crop) or a
    PairAugment that does everything itself."""

    ignore_index: int = 255
    class_names: Sequence[str] = ()
    flip_pairs: Sequence[Sequence[int]] = ()  # classes a horizontal flip exchanges (left/right parts)
    pad_label: int = 0  # label of pixels a warp brings in from outside the image
    crop_size: int | None = None  # train crops, taken at the centre after the warp

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def augment(self, batch: Any) -> Any:
        x, labels = batch
        if isinstance(self.batch_augment, PairAugment):
            return self.batch_augment(x, labels, self._augment_generator(x.device))
        theta = self._theta(x)
        x = self.batch_augment.warp(x, theta)
        labels = warp_labels(labels, theta, self.batch_augment.warp, self.pad_label)
        labels = swap_labels(labels, is_flipped(theta), self.flip_pairs)
        if self.crop_size:
            x, labels = center_crop(x, self.crop_size), center_crop(labels, self.crop_size)
        return x, labels


class KeypointDataModule(DenseDataModule):
    """Datasets yield ([0, 1] image (3, S, S), keypoints (K, 2) in pixels with pixel centres at
    integers, visibility (K,), and optionally more per-sample values that pass through, such
    as subset tags). `flip_index[k]` is the keypoint that k becomes in a mirror image;
    `interocular` names the two points whose distance normalises the NME. The warp may
    change the image size (a context crop in, the face crop out)."""

    keypoint_names: Sequence[str] = ()
    flip_index: Sequence[int] = ()
    interocular: Sequence[int] | None = None

    @property
    def num_keypoints(self) -> int:
        return len(self.flip_index)

    def augment(self, batch: Any) -> Any:
        x, points, visible, *rest = batch
        theta = self._theta(x)
        size = x.shape[-2:]
        x = self.batch_augment.warp(x, theta)
        points = transform_keypoints(points, theta, size, x.shape[-2:])
        flipped = is_flipped(theta)
        index = torch.as_tensor(self.flip_index, device=points.device)
        return (x, swap_on_flip(points, flipped, index), swap_on_flip(visible, flipped, index), *rest)
