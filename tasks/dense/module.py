"""DenseModule: what the segmentation and landmark LightningModules share: a timm backbone
(built and initialised like every student, see tasks.models.backbones) read at several stages, a
head built from the backbone's feature_info, the optimiser, export of the backbone, and the
samples kept for the pictures."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import pytorch_lightning as pl
import torch
from torchmetrics import MaxMetric, MeanMetric, MinMetric

from tasks.config.types import Count, KeywordsOf
from tasks.models.backbones import create_backbone, export_backbone
from tasks.training.optim import configure_optimizers
from tasks.training.plots import log_figure


def feature_info(backbone: torch.nn.Module) -> tuple[list[int], list[int]]:
    """(channels, reductions) of every stage, from timm's feature_info (list or FeatureInfo)."""
    info = backbone.feature_info
    entries = info.info if hasattr(info, "info") else info
    return [e["num_chs"] for e in entries], [e["reduction"] for e in entries]


def describe_partial(factory: Callable) -> dict[str, Any]:
    """A plain-data record of a `_partial_` config node (for the saved hyperparameters)."""
    if isinstance(factory, partial):
        target = f"{factory.func.__module__}.{factory.func.__qualname__}"
        plain = (int, float, str, bool, list, tuple, type(None))
        return {"_target_": target, **{k: v for k, v in factory.keywords.items() if isinstance(v, plain)}}
    return {"_target_": f"{type(factory).__module__}.{type(factory).__qualname__}"}


class DenseModule(pl.LightningModule, ABC):
    def __init__(
        self,
        backbone: Annotated[dict[str, Any], KeywordsOf("tasks.models.backbones.create_backbone")],
        head: Callable,
        num_outputs: int,
        optimizer: Callable,
        scheduler: Callable | None = None,
        plot_samples: Count = 8,
    ):
        super().__init__()
        self.backbone = create_backbone(**backbone, num_classes=0)
        channels, reductions = feature_info(self.backbone)
        self.head = head(channels, reductions, num_outputs)  # heads take (channels, reductions, outputs)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.plot_samples = plot_samples
        self._samples: dict[str, tuple[torch.Tensor, ...]] = {}
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_best = MaxMetric() if self.higher_is_better else MinMetric()
        self.val_best.persistent(True)  # survives a resume

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's stage features that the head reads."""
        return self.backbone.forward_intermediates(x, indices=self.head.in_indices, intermediates_only=True)

    def head_forward(self, x: torch.Tensor) -> Any:
        return self.head(x, self.features(x))

    # --- evaluation -----------------------------------------------------------------
    headline = ""  # name of the ModuleDict attribute {val, test} of the monitored metric
    higher_is_better = True
    picture_name = ""  # plots/<stage>_<picture_name>.png

    @abstractmethod
    def evaluate(self, batch: Any, batch_idx: int, stage: str) -> None:
        """Loss, metrics and kept samples of one val/test batch."""

    @abstractmethod
    def figure(self, samples: tuple[torch.Tensor, ...], title: str):
        """The picture of the kept samples."""

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_best(getattr(self, self.headline)["val"].compute())
        self.log(f"val/{self.headline}_best", self.val_best.compute(), sync_dist=True)
        self.log_picture("val")

    def on_test_epoch_end(self) -> None:
        self.log_picture("test")

    # --- pictures -------------------------------------------------------------------
    def log_picture(self, stage: str) -> None:
        samples = self._samples.pop(stage, None)
        if samples is not None:
            figure = self.figure(samples, f"{stage} epoch {self.current_epoch}")
            log_figure(self.trainer, figure, f"{stage}_{self.picture_name}")

    def keep_samples(self, stage: str, batch_idx: int, *tensors: torch.Tensor) -> None:
        """Keep the first `plot_samples` samples of the first batch of an epoch (rank 0 draws)."""
        if batch_idx == 0 and self.plot_samples > 0 and not self.trainer.sanity_checking:
            self._samples[stage] = tuple(t[: self.plot_samples].detach().cpu() for t in tensors)

    def images_for_display(self, x: torch.Tensor) -> torch.Tensor:
        data = getattr(self.trainer, "datamodule", None)
        return data.denormalize(x) if data is not None and hasattr(data, "denormalize") else x

    # --- optimisation and export ------------------------------------------------------
    def configure_optimizers(self):
        return configure_optimizers(
            self, [p for p in self.parameters() if p.requires_grad], self.optimizer_factory, self.scheduler_factory
        )

    def export_artifacts(self, export_dir: Path) -> dict[str, str]:
        """The fine-tuned backbone as safetensors + card (reloads with timm or model.backbone.init)."""
        return export_backbone(self.backbone, export_dir, name="backbone")
