"""MultiTaskModule: the plain multi-task baseline of KF (a shared timm backbone with one
linear head per task, cross-entropy per task). Its test phase reports the same per-task
accuracy, disentanglement and probe metrics as KF on its shared representation; its
export (a multi-head card) can serve as KF's teacher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch

from kf.evaluation import publish, representation_figures, representation_metrics, task_metrics
from kf.figures import grouped_bars
from kf.multihead import MultiHeadNet
from kf.task_module import TaskModule
from tasks.config.types import Choices, Count, KeywordsOf, Probability
from tasks.models.backbones import count_parameters
from tasks.training.collector import Collector
from tasks.training.plots import log_figure


class MultiTaskModule(TaskModule):
    def __init__(
        self,
        backbone: Annotated[dict[str, Any], KeywordsOf("tasks.models.backbones.create_backbone")],
        optimizer: Callable,
        scheduler: Callable | None = None,
        factor_sizes: dict[str, int] | None = None,
        tasks: str | list[dict[str, Any]] = "per_factor",
        probe_tasks: list[dict[str, Any]] | None = None,
        feature_dim: Count = 0,
        label_smoothing: Probability = 0.0,
        task_reduction: Annotated[str, Choices("kf.task_module.REDUCTIONS")] = "sum",
        dci_importance: Annotated[str, Choices("kf.disentanglement.IMPORTANCES")] = "gbt",
    ):
        super().__init__(optimizer, scheduler, factor_sizes, tasks, probe_tasks, task_reduction)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.net = MultiHeadNet.create(backbone, self.specs, feature_dim)
        self._collector: Collector | None = None

    def task_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        targets = self.targets(y)
        logits = self.net(x)
        eps = self.hparams.label_smoothing
        loss = self.reduce(
            [
                torch.nn.functional.cross_entropy(lg.float(), targets[:, k], label_smoothing=eps)
                for k, lg in enumerate(logits)
            ]
        )
        task_acc = torch.stack([(lg.argmax(1) == targets[:, k]).float().mean() for k, lg in enumerate(logits)]).mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/task_acc", task_acc, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def on_test_epoch_start(self) -> None:
        self._collector = Collector()

    def test_step(self, batch, batch_idx):
        x, y = batch
        z = self.net.features(x)
        logits = [head(z) for head in self.net.heads]
        self._collector.add(y=y, z=z, **{f"logits{k}": lg for k, lg in enumerate(logits)})

    def on_test_epoch_end(self) -> None:
        data = self._collector.gather()
        metrics = self._report(data) if self.trainer.is_global_zero else None
        publish(self, metrics)

    def _report(self, data: dict[str, torch.Tensor]) -> dict[str, float]:
        y = data["y"]
        logits = [data[f"logits{k}"] for k in range(len(self.specs))]
        out = task_metrics(logits, self.specs, self.targets(y))
        out["test/acc"] = self.headline_accuracy(logits, y, out["test/task_acc"])
        out["test/params/total"] = float(count_parameters(self.net))
        out.update(
            representation_metrics(
                {"shared": data["z"]},
                y,
                self.factor_names,
                self.specs,
                self.probe_specs,
                self.hparams.dci_importance,
                disentangle_reps=("shared",),
                probe_reps=("shared",),
            )
        )
        groups = {s.name: {"multi-task baseline": out[f"test/task_acc/{s.name}"]} for s in self.specs}
        log_figure(
            self.trainer,
            grouped_bars(groups, "test accuracy", "per-task accuracy of the multi-task baseline"),
            "task_accuracy",
        )
        representation_figures(self.trainer, out)
        return out

    def export_artifacts(self, export_dir: Path) -> dict[str, str]:
        """model.json: a multi-head card that KF loads as a teacher (model.teacher.source)."""
        return self.net.export(export_dir, name="model")
