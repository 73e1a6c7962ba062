"""TaskModule: what the KF module and the multi-task baseline share: the validated task
declarations, the check against the data's factors, per-task validation metrics, the
reduction of per-task losses and the optimiser."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from kf.metrics import accuracy, decoded_accuracy
from kf.task_spec import build_tasks, task_targets
from tasks.config.types import Choices
from tasks.distill.frozen import trainable_parameters
from tasks.errors import UserError
from tasks.training.optim import configure_optimizers

REDUCTIONS = ("sum", "mean")


def data_factor_sizes(data) -> dict[str, int] | None:
    """The ground-truth factors of a DataModule: `factor_sizes`, or its single class label."""
    sizes = getattr(data, "factor_sizes", None)
    if sizes:
        return dict(sizes)
    n = getattr(data, "num_classes", 0)
    return {"label": int(n)} if n else None


class TaskModule(pl.LightningModule, ABC):
    """Subclasses define `task_logits(x) -> list of (B, C_k)` and their training step."""

    def __init__(
        self,
        optimizer: Callable,
        scheduler: Callable | None,
        factor_sizes: dict[str, int] | None,
        tasks: str | Sequence[Any],
        probe_tasks: Sequence[Any] | None,
        task_reduction: Annotated[str, Choices("kf.task_module.REDUCTIONS")],
    ):
        super().__init__()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        if task_reduction not in REDUCTIONS:
            raise UserError(f"model.task_reduction='{task_reduction}' must be one of {list(REDUCTIONS)}.")
        self.task_reduction = task_reduction
        self.factor_sizes = dict(factor_sizes or {"label": 10})
        self.factor_names = list(self.factor_sizes)
        self.specs = build_tasks(tasks, self.factor_sizes)
        self.probe_specs = build_tasks(probe_tasks, self.factor_sizes, key="model.probe_tasks") if probe_tasks else []
        self.val_task_acc, self.val_acc, self.val_loss = MeanMetric(), MeanMetric(), MeanMetric()

    @abstractmethod
    def task_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One (B, classes_k) logit tensor per task."""

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        return task_targets(self.specs, self.factor_names, y)

    def reduce(self, values: list[torch.Tensor]) -> torch.Tensor:
        total = torch.stack(values).sum()
        return total / len(values) if self.task_reduction == "mean" else total

    def headline_accuracy(self, logits: Sequence[torch.Tensor], y: torch.Tensor, task_acc: float) -> float:
        """Accuracy on the factors the tasks identify together (e.g. the 10 digit classes
        from 10 one-vs-rest factors); the mean task accuracy when they identify none."""
        decoded = decoded_accuracy(logits, self.specs, self.factor_names, y)
        return float(np.mean(list(decoded.values()))) if decoded else task_acc

    def on_fit_start(self) -> None:
        found = data_factor_sizes(self.trainer.datamodule)
        if found and found != self.factor_sizes:
            raise UserError(
                f"The data's ground-truth factors are {found} but model.factor_sizes={self.factor_sizes}. "
                f"Set model.factor_sizes to {found}."
            )

    def validation_step(self, batch, batch_idx):
        x, y = batch
        targets = self.targets(y)
        logits = self.task_logits(x)
        task_acc = float(np.mean([accuracy(lg, targets[:, k]) for k, lg in enumerate(logits)]))
        n = len(x)
        self.val_task_acc.update(task_acc, n)
        self.val_acc.update(self.headline_accuracy(logits, y, task_acc), n)
        self.val_loss.update(
            torch.stack([F.cross_entropy(lg.float(), targets[:, k]) for k, lg in enumerate(logits)]).mean(), n
        )
        self.log("val/task_acc", self.val_task_acc, on_epoch=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)
        self.log("val/loss", self.val_loss, on_epoch=True)

    def configure_optimizers(self):
        return configure_optimizers(self, trainable_parameters(self), self.optimizer_factory, self.scheduler_factory)
