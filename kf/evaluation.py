"""The test-phase report shared by the KF module and the multi-task baseline: per-task
accuracy (against the teacher where there is one), disentanglement (MIG, DCI) of named
representations, linear-probe transfer, logged as test/<name> with pictures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kf.disentanglement import dci, mig
from kf.figures import grouped_bars
from kf.metrics import accuracy, balanced_accuracy, probe_accuracy
from kf.task_spec import TaskSpec, task_targets
from tasks.training.plots import log_figure


def task_metrics(
    logits: Sequence[torch.Tensor], specs: Sequence[TaskSpec], targets: torch.Tensor, who: str = ""
) -> dict[str, float]:
    """test/<who>task_acc/<task>, test/<who>task_bacc/<task> (balanced accuracy: the mean
    recall of the task's classes), and their means over tasks."""
    out = {}
    accs, baccs = [], []
    for k, (scores, spec) in enumerate(zip(logits, specs)):
        if scores is None:
            continue
        accs.append(accuracy(scores, targets[:, k]))
        baccs.append(balanced_accuracy(scores, targets[:, k]))
        out[f"test/{who}task_acc/{spec.name}"] = accs[-1]
        out[f"test/{who}task_bacc/{spec.name}"] = baccs[-1]
    if accs:
        out[f"test/{who}task_acc"] = float(np.mean(accs))
        out[f"test/{who}task_bacc"] = float(np.mean(baccs))
    return out


def representation_metrics(
    reps: dict[str, torch.Tensor],
    y: torch.Tensor,
    factor_names: Sequence[str],
    specs: Sequence[TaskSpec],
    probe_specs: Sequence[TaskSpec],
    importance: str = "gbt",
    disentangle_reps: Sequence[str] = (),
    probe_reps: Sequence[str] = (),
) -> dict[str, float]:
    """MIG and DCI of `disentangle_reps` over the factors the tasks use (when there are at
    least two), and linear-probe accuracy of `probe_reps` on every probe task."""
    out: dict[str, float] = {}
    y2 = (y.view(-1, 1) if y.dim() == 1 else y).numpy()
    used = list(dict.fromkeys(s.factor for s in specs))
    if len(used) >= 2:
        factors = y2[:, [list(factor_names).index(f) for f in used]]
        for name in disentangle_reps:
            codes = reps[name].numpy().astype(np.float64)
            if codes.shape[1] < 2:
                continue
            out[f"test/mig/{name}"] = mig(codes, factors)
            scores = dci(codes, factors, method=importance)
            for key, value in scores.items():
                out[f"test/dci_{key}/{name}"] = value
    if probe_specs:
        targets = task_targets(probe_specs, list(factor_names), y).numpy()
        for k, spec in enumerate(probe_specs):
            for name in probe_reps:
                out[f"test/probe/{spec.name}/{name}"] = probe_accuracy(reps[name].numpy(), targets[:, k])
            out[f"test/probe/{spec.name}/majority"] = float(np.bincount(targets[:, k]).max() / len(targets))
    return out


def representation_figures(trainer, metrics: dict[str, float]) -> None:
    """Bars of MIG/DCI per representation and of probe accuracy per probe task."""
    scores: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if parts[1] in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness"):
            scores.setdefault(parts[1].replace("dci_", "DCI "), {})[parts[2]] = value
    if scores:
        log_figure(trainer, grouped_bars(scores, "score", "disentanglement of each representation"), "disentanglement")
    probes: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if parts[1] == "probe":
            probes.setdefault(parts[2], {})[parts[3]] = value
    if probes:
        log_figure(
            trainer,
            grouped_bars(probes, "probe accuracy (5-fold CV)", "linear probe on tasks the network was not trained for"),
            "transfer_probe",
        )


def publish(module, metrics: dict[str, float] | None) -> dict[str, float]:
    """Broadcast rank 0's metrics and log them identically on every rank."""
    metrics = module.trainer.strategy.broadcast(metrics, src=0)
    for key, value in metrics.items():
        module.log(key, float(value), sync_dist=False, rank_zero_only=False)
    return metrics
