"""Classic knowledge distillation (Hinton, Vinyals and Dean, 2015): a timm student learns from
a trained classifier teacher's softened outputs and from the labels,

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y).

Everything but that loss is shared: the student is the framework's ClassificationModule (metrics,
EMA, optimiser, export in timm's Hub layout), the teacher is named in the shared teacher-source
grammar and kept frozen (tasks.distill), and the KL is tasks.distill.losses.kd_loss.

The teacher sees its own input: the student's batch is mapped from the DataModule's
normalisation to the one the teacher's export records (and resized to its input size), so a
teacher trained on other statistics still sees what it was trained on."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from tasks.config.types import Count, KeywordsOf, Probability, Range
from tasks.distill.frozen import attach_frozen
from tasks.distill.losses import kd_loss
from tasks.distill.teacher_source import input_normalization, load_timm_teacher
from tasks.models.classification import ClassificationModule

# The frozen teacher stays in eval mode on purpose.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")

Temperature = Annotated[float, Range(0, low_open=True, what="the softmax temperature divides the logits")]


def hinton_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, KD term, CE term), in float32: total = alpha * KD + (1 - alpha) * CE."""
    soft = kd_loss(student_logits, torch.softmax(teacher_logits.float() / temperature, dim=1), temperature)
    hard = F.cross_entropy(student_logits.float(), target, label_smoothing=label_smoothing)
    return alpha * soft + (1 - alpha) * hard, soft, hard


class KDModule(ClassificationModule):
    def __init__(
        self,
        backbone: Annotated[dict[str, Any], KeywordsOf("tasks.models.backbones.create_backbone")],
        num_classes: Count,
        optimizer: Callable,
        teacher: Annotated[dict[str, Any], KeywordsOf("tasks.distill.teacher_source.load_timm_teacher")],
        scheduler: Callable | None = None,
        temperature: Temperature = 4.0,
        alpha: Probability = 0.9,
        label_smoothing: Probability = 0.0,
        ema_decay: Probability | None = None,
    ):
        """`teacher`: the keywords of tasks.distill.teacher_source.load_timm_teacher (source:
        an export, run:<dir>, latest:<task>, a checkpoint with arch and prefix, a timm name).
        Its head must predict `num_classes` classes. `alpha`: the weight of the KD term."""
        super().__init__(backbone, num_classes, optimizer, scheduler, label_smoothing, ema_decay=ema_decay)
        net = load_timm_teacher(**teacher, num_classes=num_classes)
        attach_frozen(self, "teacher", net)
        self.teacher_stats = input_normalization(net)
        size = tuple((net.pretrained_cfg or {}).get("input_size") or ())[1:]
        self.teacher_size = tuple(int(s) for s in size) or None
        # student normalisation -> teacher normalisation, set in setup() once the data is known
        self.register_buffer("teacher_scale", torch.ones(1, 1, 1, 1), persistent=False)
        self.register_buffer("teacher_shift", torch.zeros(1, 1, 1, 1), persistent=False)
        self.teacher_acc = torch.nn.ModuleDict(
            {stage: MulticlassAccuracy(num_classes, average="micro") for stage in ("val", "test")}
        )

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self.set_input_normalization(getattr(data, "mean", None), getattr(data, "std", None))

    def set_input_normalization(self, mean, std) -> None:
        """Map inputs normalised with (mean, std) to the teacher's normalisation: x * scale + shift.
        Unknown statistics on either side leave the inputs as they are."""
        if mean is None or std is None or self.teacher_stats is None:
            return
        as_column = lambda v: torch.tensor([float(x) for x in v]).view(1, -1, 1, 1)  # noqa: E731
        (s_mean, s_std), (t_mean, t_std) = (as_column(mean), as_column(std)), map(as_column, self.teacher_stats)
        self.teacher_scale = (s_std / t_std).to(self.teacher_scale.device)
        self.teacher_shift = ((s_mean - t_mean) / t_std).to(self.teacher_shift.device)

    def teacher_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.teacher_scale + self.teacher_shift
        if self.teacher_size and tuple(x.shape[-2:]) != self.teacher_size:
            x = F.interpolate(x, size=self.teacher_size, mode="bilinear", align_corners=False)
        return x

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(self.teacher_input(x)).float()

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        hp = self.hparams
        loss, soft, hard = hinton_loss(logits, self.teacher_logits(x), y, hp.temperature, hp.alpha, hp.label_smoothing)
        self.metrics["train_acc"](logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({"train/kd": soft, "train/ce": hard})
        self.log("train/acc", self.metrics["train_acc"], on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        super()._evaluate(batch, stage)
        x, y = batch
        self.teacher_acc[stage](self.teacher_logits(x), y)
        self.log(f"{stage}/teacher_acc", self.teacher_acc[stage], on_step=False, on_epoch=True)
