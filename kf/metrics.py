"""Evaluation of factor networks: per-task accuracy (also of the teacher, through the task
groups), factor decoding for assembled subsets and linear-probe transfer. The test phase
collects its outputs across DDP ranks with tasks.training.collector.Collector."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_accuracy

from kf.losses import group_logits, kd_target
from kf.task_spec import TaskSpec, decode_factor
from tasks.errors import UserError


def match_teacher(
    teacher_specs: Sequence[TaskSpec], specs: Sequence[TaskSpec]
) -> list[tuple[int, torch.Tensor] | None]:
    """For every task: (teacher output index, coarsening matrix) of the first teacher output
    whose classes sum into the task's classes, or None when the teacher cannot tell."""
    matches = []
    for spec in specs:
        found = None
        for i, t in enumerate(teacher_specs):
            matrix = t.coarsening(spec)
            if matrix is not None:
                found = (i, matrix)
                break
        matches.append(found)
    return matches


def teacher_task_probs(
    teacher_logits: Sequence[torch.Tensor],
    matches: Sequence[tuple[int, torch.Tensor] | None],
    temperature: float = 1.0,
    mode: str = "tempered_groups",
) -> list[torch.Tensor | None]:
    """Teacher probabilities (at `temperature`, see kf.losses.kd_target) over every task's classes."""
    return [None if m is None else kd_target(teacher_logits[m[0]], m[1], temperature, mode) for m in matches]


def teacher_task_logits(
    teacher_logits: Sequence[torch.Tensor], matches: Sequence[tuple[int, torch.Tensor] | None]
) -> list[torch.Tensor | None]:
    """Teacher logits over every task's classes (logsumexp over each group; the logits
    themselves for a task the teacher predicts directly), for the MSE-logit KD."""
    return [None if m is None else group_logits(teacher_logits[m[0]], m[1]) for m in matches]


def accuracy(scores: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy of (N, C) scores (torchmetrics' micro average: the fraction right)."""
    if not len(target):
        return float("nan")
    return float(multiclass_accuracy(scores, target, num_classes=scores.shape[1], average="micro"))


def balanced_accuracy(scores: torch.Tensor, target: torch.Tensor) -> float:
    """Mean per-class recall (one-vs-rest tasks are imbalanced: 90 % of digits are 'rest')."""
    pred = scores.argmax(1)
    recalls = [float((pred[target == c] == c).float().mean()) for c in target.unique()]
    return float(np.mean(recalls))


def decoded_accuracy(
    logits: Sequence[torch.Tensor], specs: Sequence[TaskSpec], factors: Sequence[str], y: torch.Tensor
) -> dict[str, float]:
    """Accuracy on every factor that the tasks together identify (product of experts)."""
    y = y.view(-1, 1) if y.dim() == 1 else y
    log_probs = [torch.log_softmax(lg.float(), 1) for lg in logits]
    out = {}
    for factor in dict.fromkeys(s.factor for s in specs):
        pred = decode_factor(log_probs, specs, factor)
        if pred is not None:
            out[factor] = float((pred == y[:, factors.index(factor)]).float().mean())
    return out


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic-regression probe on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels)
    folds = int(min(folds, counts[counts > 0].min()))
    if folds < 2:
        raise UserError(
            "The linear probe needs at least two test samples of every probe class; use a larger test split."
        )
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(
        cross_val_score(probe, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed)).mean()
    )
