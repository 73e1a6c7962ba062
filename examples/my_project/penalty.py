"""A module of this project, not of the framework: the framework's classifier trained with a
confidence penalty (Pereyra et al., 2017, "Regularizing Neural Networks by Penalizing Confident
Output Distributions"): the loss is cross-entropy minus `beta` times the entropy of the
predicted distribution. Validation, test and the export (timm's Hub layout, which kt-eval
reads) are the framework's. conf/model/confidence_penalty.yaml names it as
`_target_: penalty.ConfidencePenaltyClassifier`; the typed preflight checks `beta` against
its annotation, and the base class's keys through **kwargs."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F

from tasks.config.types import Range
from tasks.models.classification import ClassificationModule


def confidence_penalty_loss(
    logits: torch.Tensor, targets: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy minus beta times the mean entropy of softmax(logits), in float32; and that entropy."""
    log_p = logits.float().log_softmax(dim=-1)
    entropy = -(log_p.exp() * log_p).sum(dim=-1).mean()
    return F.nll_loss(log_p, targets) - beta * entropy, entropy


class ConfidencePenaltyClassifier(ClassificationModule):
    def __init__(self, beta: Annotated[float, Range(0, what="the entropy bonus")] = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.beta = beta

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss, entropy = confidence_penalty_loss(logits, y, self.beta)
        self.metrics["train_acc"](logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/entropy", entropy, on_step=False, on_epoch=True)  # what the penalty keeps up
        self.log("train/acc", self.metrics["train_acc"], on_step=False, on_epoch=True)
        return loss
