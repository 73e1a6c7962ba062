"""ClassificationModule: a timm backbone with its linear head, cross-entropy (optional label
smoothing, or timm's Mixup/CutMix with soft targets), top-1/top-5 accuracy, and an optional
EMA of the network (tasks.training.ema.ModelEMA) that validation, test and the export use; the
supervised baseline and every stage-2 fine-tune."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from tasks.config.types import Count, KeywordsOf, Probability
from tasks.data.toolbox import MixupCutmix
from tasks.errors import UserError
from tasks.models.backbones import create_backbone
from tasks.models.backbones.export import export_timm
from tasks.training.ema import ModelEMA
from tasks.training.optim import configure_optimizers
from tasks.training.seeding import batch_generator


class ClassificationModule(pl.LightningModule):
    def __init__(
        self,
        backbone: Annotated[dict[str, Any], KeywordsOf("tasks.models.backbones.create_backbone")],
        num_classes: Count,
        optimizer: Callable,
        scheduler: Callable | None = None,
        label_smoothing: Probability = 0.0,
        mixup: Annotated[dict[str, Any] | None, KeywordsOf("tasks.data.toolbox.MixupCutmix")] = None,
        ema_decay: Probability | None = None,
    ):
        super().__init__()
        if mixup and label_smoothing:
            raise UserError(
                "With model.mixup set, smoothing comes from model.mixup.label_smoothing; set model.label_smoothing=0."
            )
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.net = self.build_net(backbone, num_classes)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.label_smoothing = label_smoothing
        self.mixup = MixupCutmix(**mixup, num_classes=num_classes) if mixup else None
        # a submodule, so checkpoints hold it and a resume continues it; constant decay, as Lightning's callback had
        self.ema = ModelEMA(self.net, ema_decay, warmup=False) if ema_decay else None
        top_k = min(5, num_classes)
        self.metrics = torch.nn.ModuleDict(
            {
                f"{stage}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                for stage in ("train", "val", "test")
                for name, k in (("acc", 1), ("acc_top5", top_k))
            }
        )
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # survives a resume

    def build_net(self, backbone: dict[str, Any], num_classes: int) -> torch.nn.Module:
        """The network (a timm backbone with its head); subclasses that build it another way override this."""
        return create_backbone(**backbone, num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def evaluated_net(self) -> torch.nn.Module:
        """What validation, test and the export use: the EMA of the network when model.ema_decay is set."""
        return self.ema.model if self.ema is not None else self.net

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # once per optimiser step (not per accumulated batch); the count survives a resume with the EMA
        if self.ema is not None and self.trainer.global_step > int(self.ema.num_updates):
            self.ema.update(self.net)

    def on_fit_start(self) -> None:
        data = self.trainer.datamodule
        n = getattr(data, "num_classes", None)
        if n and n != self.hparams.num_classes:
            raise UserError(
                f"The data has {n} classes but model.num_classes={self.hparams.num_classes}. Set model.num_classes={n}."
            )

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.mixup is not None:  # soft targets; train/acc still compares with the unmixed labels
            seed = getattr(self.trainer.datamodule, "seed", 0)
            x, soft = self.mixup(x, y, batch_generator(self.trainer, seed, x.device, "augment/mixup"))
            logits = self(x)
            loss = SoftTargetCrossEntropy()(logits.float(), soft)
        else:
            logits = self(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        self.metrics["train_acc"](logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.metrics["train_acc"], on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        logits = self.evaluated_net(x)
        loss = getattr(self, f"{stage}_loss")
        loss(F.cross_entropy(logits.float(), y))
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        for name in ("acc", "acc_top5"):
            metric = self.metrics[f"{stage}_{name}"]
            metric(logits, y)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "acc")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.metrics["val_acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return configure_optimizers(
            self, [p for p in self.parameters() if p.requires_grad], self.optimizer_factory, self.scheduler_factory
        )

    def export_artifacts(self, export_dir: Path) -> dict[str, str]:
        """timm's Hub layout: config.json + model.safetensors (timm.create_model("local-dir:<dir>"))."""
        return export_timm(self.evaluated_net, export_dir)
