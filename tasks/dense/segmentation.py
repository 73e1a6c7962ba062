"""SegmentationModule: semantic segmentation over any timm backbone with a BiSeNetV1 or FCN
head; cross-entropy with an ignore index (plus weighted auxiliary losses), averaged over
all pixels (mmseg 0.30) or over the labelled ones, mIoU and per-class IoU, and a picture of
true against predicted label maps each val/test epoch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from tasks.config.types import Choices, Count, KeywordsOf, NonNegative
from tasks.dense.heads.init import initialize_head
from tasks.dense.module import DenseModule, describe_partial
from tasks.dense.pictures import mask_figure
from tasks.errors import UserError

LOSS_AVERAGES = ("all", "valid")


class SegmentationModule(DenseModule):
    headline, picture_name = "miou", "masks"

    def __init__(
        self,
        backbone: Annotated[dict[str, Any], KeywordsOf("tasks.models.backbones.create_backbone")],
        head: Callable,
        num_classes: Count,
        optimizer: Callable,
        scheduler: Callable | None = None,
        ignore_index: int = 255,
        aux_weight: NonNegative = 1.0,
        loss_average: Annotated[str, Choices("tasks.dense.segmentation.LOSS_AVERAGES")] = "valid",
        head_init: str = "pytorch",
        class_names: Sequence[str] | None = None,
        plot_samples: Count = 8,
    ):
        if loss_average not in LOSS_AVERAGES:
            raise UserError(f"model.loss_average='{loss_average}' is not one of {list(LOSS_AVERAGES)}.")
        super().__init__(backbone, head, num_classes, optimizer, scheduler, plot_samples)
        initialize_head(self.head, head_init)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "head"])
        self.hparams["head"] = describe_partial(head)
        self.num_classes, self.ignore_index, self.aux_weight = num_classes, ignore_index, aux_weight
        self.loss_average = loss_average
        self.class_names = list(class_names) if class_names else None

        def jaccard() -> MulticlassJaccardIndex:
            return MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index)

        self.miou = torch.nn.ModuleDict({s: jaccard() for s in ("val", "test")})
        # NaN for a class absent from both truth and prediction: it has no IoU (and is not logged).
        self.test_iou = MulticlassJaccardIndex(
            num_classes, average="none", ignore_index=ignore_index, zero_division=float("nan")
        )

        def accuracy() -> MulticlassAccuracy:
            return MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index)

        self.pixel_acc = torch.nn.ModuleDict({s: accuracy() for s in ("val", "test")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) at the input resolution."""
        return self._upsampled(self.head_forward(x), x)[0]

    @staticmethod
    def _upsampled(outputs: list[torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
        return [F.interpolate(o, size=x.shape[-2:], mode="bilinear", align_corners=False) for o in outputs]

    def on_fit_start(self) -> None:
        data = self.trainer.datamodule
        n = getattr(data, "num_classes", None)
        if n and n != self.num_classes:
            raise UserError(
                f"The data has {n} classes but model.num_classes={self.num_classes}. Set model.num_classes={n}."
            )
        if getattr(data, "ignore_index", self.ignore_index) != self.ignore_index:
            raise UserError(
                f"The data marks ignored pixels with {data.ignore_index} but model.ignore_index={self.ignore_index}."
            )

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy; "all" divides the sum over labelled pixels by every pixel, ignored
        ones included (mmseg 0.30's default, avg_non_ignore=False), "valid" by the labelled ones."""
        if self.loss_average == "valid":
            return F.cross_entropy(logits.float(), labels, ignore_index=self.ignore_index)
        return F.cross_entropy(logits.float(), labels, ignore_index=self.ignore_index, reduction="sum") / labels.numel()

    def training_step(self, batch, batch_idx):
        x, labels = batch
        main, *aux = self._upsampled(self.head_forward(x), x)
        loss_main = self._loss(main, labels)
        loss_aux = sum((self._loss(a, labels) for a in aux), torch.zeros((), device=x.device))
        loss = loss_main + self.aux_weight * loss_aux
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/loss_main", loss_main)
        if aux:
            self.log("train/loss_aux", loss_aux)
        return loss

    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x, labels = batch
        logits = self(x)
        loss = getattr(self, f"{stage}_loss")
        loss(self._loss(logits, labels))
        pred = logits.argmax(1)
        self.miou[stage](pred, labels)
        self.pixel_acc[stage](pred, labels)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        self.log(f"{stage}/miou", self.miou[stage], on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/pixel_acc", self.pixel_acc[stage], on_step=False, on_epoch=True)
        if stage == "test":
            self.test_iou(pred, labels)
        self.keep_samples(stage, batch_idx, self.images_for_display(x), labels, pred)

    def figure(self, samples, title):
        return mask_figure(*samples, num_classes=self.num_classes, ignore_index=self.ignore_index, title=title)

    def on_test_epoch_end(self) -> None:
        data_names = getattr(getattr(self.trainer, "datamodule", None), "class_names", None)
        names = self.class_names or (list(data_names) if data_names else [str(c) for c in range(self.num_classes)])
        iou = self.test_iou.compute()
        self.log_dict({f"test/iou_{name}": value for name, value in zip(names, iou) if not torch.isnan(value)})
        self.test_iou.reset()
        super().on_test_epoch_end()
