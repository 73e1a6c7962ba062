"""Collector: the per-batch tensors of an evaluation epoch, one torchmetrics CatMetric per
name, concatenated over batches and, under DDP, over ranks (rank-major, uneven shards
allowed) when gathered."""

from __future__ import annotations

import torch
from torchmetrics import CatMetric


class Collector:
    """`add(name=tensor, ...)` every batch, then `gather()` on every rank: {name: tensor} on
    the CPU. Floating tensors are kept as float32, others in their own dtype; NaNs are kept."""

    def __init__(self):
        self.metrics: dict[str, CatMetric] = {}

    def add(self, **tensors: torch.Tensor) -> None:
        for name, value in tensors.items():
            if name not in self.metrics:
                dtype = torch.float32 if value.is_floating_point() else value.dtype
                # the dtype after the device: torchmetrics' .to() sets its default dtype again
                self.metrics[name] = CatMetric(nan_strategy="disable").to(value.device).set_dtype(dtype)
            self.metrics[name].update(value.detach())

    def gather(self) -> dict[str, torch.Tensor]:
        """Everything added since the last gather; a collective call under DDP (every rank calls it)."""
        out = {name: metric.compute().cpu() for name, metric in self.metrics.items()}
        self.metrics.clear()
        return out

    def __bool__(self) -> bool:
        return bool(self.metrics)
