"""The generic distillation losses every transfer method may use, each computed in float32
with autocast off, whatever the training precision.

Logits (student (B, K), teacher probabilities (B, K)):
  kd_loss    Hinton's KD: T^2 * KL(p_T || softmax(student / T)), batch mean

Feature maps, the student's f_S (B, C_s, h, w) against the teacher's f_T (B, C_t, H, W), with
the weights of the diffusion-distillation recipes as defaults:

  HintLoss   1x1-conv adapter (C_s -> C_t), global average pooling of both, MSE (weight 1)
  ATLoss     attention transfer: sum_c |f|^p, L2-normalised over positions, MSE (weight 1000)
  RKDLoss    relational KD on pooled vectors: 25 * distance + 50 * angle, smooth-L1 (weight 1)
  DenseLoss  1x1-conv adapter, bilinear resize to H x W, MSE (weight 1) or L1 (weight 10 in
             the original's ResNet-50/HRNet recipes)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from tasks.config.types import Choices, NonNegative, Positive, Range
from tasks.errors import UserError

DENSE_KINDS = ("mse", "l1")  # DenseLoss: the distance between the adapted student map and the teacher map


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_T || softmax(student / T)), averaged over the batch; `teacher_probs` are the
    teacher's probabilities at temperature T over the same classes (for a grouped task, already
    summed into its groups). The T^2 keeps the gradient's scale independent of T (Hinton et al.)."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_q, teacher_probs.float(), reduction="batchmean") * temperature**2


class FeatureLoss(nn.Module, ABC):
    """Base: `forward(f_s, f_t)` casts to float32 and turns autocast off around `compute`.

    `standardize` (every loss; not in the original): the teacher's feature is standardised
    per channel over the batch (and positions) before the comparison, so that what differs
    between images, not the channels' common offset, sets the loss. For teachers whose
    features vary little between images, such as the digits DDPM."""

    spatial = False  # True: needs a student map with more than one position

    def __init__(
        self, student_channels: int, teacher_channels: int, weight: NonNegative = 1.0, standardize: bool = False
    ):
        super().__init__()
        self.student_channels, self.teacher_channels, self.weight = student_channels, teacher_channels, weight
        self.standardize = standardize

    def teacher_view(self, t: torch.Tensor) -> torch.Tensor:
        """`t` standardised per channel (dim 1) over every other dim when `standardize` is on."""
        if not self.standardize:
            return t
        dims = [d for d in range(t.dim()) if d != 1]
        return (t - t.mean(dims, keepdim=True)) / (t.std(dims, correction=0, keepdim=True) + 1e-6)

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(f_s.device.type, enabled=False):
            return self.weight * self.compute(f_s.float(), f_t.detach().float())

    @abstractmethod
    def compute(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        """The loss between float32 maps, before the weight."""


def _resize_to(f: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if f.shape[-2:] == like.shape[-2:]:
        return f
    return F.interpolate(f, size=like.shape[-2:], mode="bilinear", align_corners=False)


class HintLoss(FeatureLoss):
    """MSE(GAP(conv1x1(f_S)), GAP(f_T)). A 1x1 conv commutes with average pooling, so the
    adapter is applied to the pooled vector (same value, far fewer operations).

    `standardize`: compare with the pooled teacher vector standardised per channel over the
    batch, so that what differs between images, not the channels' common offset, sets the
    loss (for teachers whose pooled features vary little between images; not in the original)."""

    def __init__(
        self, student_channels: int, teacher_channels: int, weight: NonNegative = 1.0, standardize: bool = False
    ):
        super().__init__(student_channels, teacher_channels, weight)
        self.adapter = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=True)
        self.standardize = standardize

    def compute(self, f_s, f_t):
        s = F.linear(f_s.mean(dim=(2, 3)), self.adapter.weight.flatten(1).float(), self.adapter.bias.float())
        t = f_t.mean(dim=(2, 3))
        if self.standardize:
            t = (t - t.mean(0)) / (t.std(0, correction=0) + 1e-6)
        return F.mse_loss(s, t)


class ATLoss(FeatureLoss):
    """Attention transfer; the student map is first resized (bilinear) to the teacher's size."""

    spatial = True

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        weight: NonNegative = 1000.0,
        p: Annotated[float, Range(0, low_open=True, what="the exponent of the attention map |f|^p")] = 2.0,
        eps: Positive = 1e-6,
        standardize: bool = False,
    ):
        super().__init__(student_channels, teacher_channels, weight, standardize)
        self.p, self.eps = p, eps

    def attention(self, f: torch.Tensor) -> torch.Tensor:
        a = f.abs().pow(self.p).sum(dim=1, keepdim=True)
        return a / (torch.linalg.vector_norm(a, dim=(2, 3), keepdim=True) + self.eps)

    def compute(self, f_s, f_t):
        return F.mse_loss(self.attention(_resize_to(f_s, f_t)), self.attention(self.teacher_view(f_t)))


class RKDLoss(FeatureLoss):
    """Relational KD on GAP'ed vectors (no adapter: channel counts may differ).
    Distance term: pairwise distances divided by their mean over distinct pairs.
    Angle term: cosines of the angle at every anchor between every two others."""

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        weight: NonNegative = 1.0,
        distance_weight: NonNegative = 25.0,
        angle_weight: NonNegative = 50.0,
        standardize: bool = False,
    ):
        super().__init__(student_channels, teacher_channels, weight, standardize)
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    @staticmethod
    def distances(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
        """Pairwise Euclidean distances with a zero diagonal, divided by the mean of the rest."""
        squared = v.pow(2).sum(1)
        d = (squared[:, None] + squared[None, :] - 2 * v @ v.t()).clamp(min=eps).sqrt()
        off = 1 - torch.eye(len(v), device=v.device, dtype=v.dtype)
        d = d * off
        return d / (d.sum() / off.sum().clamp(min=1))

    @staticmethod
    def angles(v: torch.Tensor) -> torch.Tensor:
        """[a, b, c] = cos of the angle at v_a between v_b and v_c (0 where b or c is a)."""
        e = F.normalize(v[None, :, :] - v[:, None, :], p=2, dim=2)
        return torch.bmm(e, e.transpose(1, 2))

    def compute(self, f_s, f_t):
        s, t = f_s.mean(dim=(2, 3)), self.teacher_view(f_t.mean(dim=(2, 3)))
        distance = F.smooth_l1_loss(self.distances(s), self.distances(t))
        angle = F.smooth_l1_loss(self.angles(s), self.angles(t))
        return self.distance_weight * distance + self.angle_weight * angle


class DenseLoss(FeatureLoss):
    """Spatial MSE or L1 between conv1x1(f_S), resized to the teacher's size, and f_T."""

    spatial = True

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        weight: NonNegative = 1.0,
        kind: Annotated[str, Choices("tasks.distill.losses.DENSE_KINDS")] = "mse",
        standardize: bool = False,
    ):
        super().__init__(student_channels, teacher_channels, weight, standardize)
        if kind not in DENSE_KINDS:
            raise UserError(f"DenseLoss kind={kind!r} is not 'mse' or 'l1'.")
        self.kind = kind
        self.adapter = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=True)

    def compute(self, f_s, f_t):
        s = _resize_to(F.conv2d(f_s, self.adapter.weight.float(), self.adapter.bias.float()), f_t)
        t = self.teacher_view(f_t)
        return F.mse_loss(s, t) if self.kind == "mse" else F.l1_loss(s, t)
