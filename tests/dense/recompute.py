"""Recompute a finished run's test metrics outside Lightning, from its best checkpoint and
with the reference formulas written out independently (mmseg's accumulated-confusion mIoU,
mmpose's keypoint_nme, the literature's FR and AUC), to check what the run logged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tasks.io.checkpoints import load_checkpoint
from tasks.run.instantiate import build
from tests.conftest import compose_config


def predictions(overrides: list[str], run_dir: Path, summary: dict, limit: int | None = None):
    """(model outputs, batches) on the first `limit` test batches (all without a limit), from
    the checkpoint the run tested."""
    cfg = compose_config(overrides, run_dir)
    data, model = build("data", cfg.data), build("model", cfg.model)
    best = summary["checkpoints"].get("best") or summary["checkpoints"]["last"]
    model.load_state_dict(load_checkpoint(best)["state_dict"])
    model.eval()
    if hasattr(data, "flip_index") and hasattr(model, "flip_index"):
        model.flip_index = torch.as_tensor(list(data.flip_index))
    data.setup("test")
    outputs, batches = [], []
    with torch.no_grad():
        for i, batch in enumerate(data.test_dataloader()):
            if limit is not None and i >= limit:
                break
            x, *rest = batch
            x = data.normalize(x)
            outputs.append(model.keypoints(x)[0] if hasattr(model, "keypoints") else model(x).argmax(1))
            batches.append(rest)
    return outputs, batches


def miou(
    preds: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int, ignore: int = 255
) -> tuple[float, np.ndarray]:
    """mmseg's mIoU: intersections and unions summed over the whole set, classes whose union
    is empty left out of the mean."""
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for p, t in zip(preds, labels):
        p, t = p.numpy().ravel(), t.numpy().ravel()
        keep = t != ignore
        p, t = p[keep], t[keep]
        for c in range(num_classes):
            inter[c] += np.sum((p == c) & (t == c))
            union[c] += np.sum((p == c) | (t == c))
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou)), iou


def landmark_metrics(
    preds: np.ndarray,
    target: np.ndarray,
    visible: np.ndarray,
    pair: tuple[int, int],
    tags: np.ndarray | None = None,
    subsets: tuple[str, ...] = (),
    threshold: float = 0.1,
) -> dict:
    """mmpose's NME (over all visible points), and per image NME -> FR and AUC (trapezoid on a
    1e-5 grid of the cumulative error curve), on all images and each subset."""
    iod = np.linalg.norm(target[:, pair[0]] - target[:, pair[1]], axis=-1)
    dist = np.linalg.norm(preds - target, axis=-1) / iod[:, None]
    groups = {"": np.ones(len(preds), bool)}
    if tags is not None:
        groups.update({f"_{name}": (tags >> bit) & 1 == 1 for bit, name in enumerate(subsets)})
    out = {}
    grid = np.linspace(0, threshold, 10001)
    for suffix, chosen in groups.items():
        if not chosen.any():
            continue
        d, v = dist[chosen], visible[chosen] > 0
        per_image = (d * v).sum(1) / v.sum(1)
        curve = (per_image[None, :] <= grid[:, None]).mean(1)
        out[f"nme{suffix}"] = d[v].mean()
        out[f"fr_10{suffix}"] = (per_image > threshold).mean()
        out[f"auc_10{suffix}"] = np.trapezoid(curve, grid) / threshold
    return out
