"""A label budget: which images of a training pool keep their label. A fixed stratified draw
of `per_class` images of every class, decided by one seed, so that every run of a study with
that seed sees the same labels (paired comparisons) and a new seed sees new ones.

The rest of the pool is either dropped (`unlabelled: drop`, for supervised training on the
few labels) or kept with the label -1 (`unlabelled: mask`, for methods that learn from the
images of the whole pool and read labels only where they are >= 0). `labels_per_class: 0`
with `mask` is the pool without any label."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tasks.errors import UserError

UNLABELLED = -1  # the label of a pool image whose label is not used
UNLABELLED_MODES = ("drop", "mask")


def draw_labelled(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted positions into `labels` of `per_class` images of every class, drawn without
    replacement by a generator of `seed` alone (independent of the order of the classes)."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if per_class < 1:
        raise UserError(f"Drawing labelled images needs labels_per_class >= 1, got {per_class}.")
    if counts.min() < per_class:
        short = ", ".join(f"class {c}: {n}" for c, n in zip(classes, counts) if n < per_class)
        raise UserError(
            f"data.labels_per_class={per_class}, but the training pool holds fewer images of {short}. "
            "Lower data.labels_per_class or enlarge the pool (data.train_subset)."
        )
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(picked))


@dataclass
class LabelBudget:
    """What a data module does with `labels_per_class`, `label_seed` and `unlabelled`."""

    per_class: int | None = None
    seed: int = 0
    unlabelled: str = "drop"

    def __post_init__(self) -> None:
        if self.unlabelled not in UNLABELLED_MODES:
            raise UserError(f"data.unlabelled={self.unlabelled!r} is not one of {list(UNLABELLED_MODES)}.")

    def apply(self, index: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
        """(pool index, pool labels) -> (kept index, labels with -1 for the unlabelled, the
        summary's `labels_used`: count, per class, seed, pool size, what became of the rest)."""
        if self.per_class is None:
            return index, labels, None
        if self.per_class == 0:  # the pool's images without a single label
            if self.unlabelled == "drop":
                raise UserError(
                    "data.labels_per_class=0 with data.unlabelled=drop leaves no image. Use unlabelled=mask."
                )
            used = {"count": 0, "per_class": 0, "seed": self.seed, "pool": len(labels), "unlabelled": "mask"}
            return index, torch.full_like(labels, UNLABELLED), used
        chosen = torch.from_numpy(draw_labelled(labels.numpy(), self.per_class, self.seed))
        used = {
            "count": len(chosen),
            "per_class": self.per_class,
            "seed": self.seed,
            "pool": len(labels),
            "unlabelled": self.unlabelled,
        }
        if self.unlabelled == "drop":
            return index[chosen], labels[chosen], used
        masked = torch.full_like(labels, UNLABELLED)
        masked[chosen] = labels[chosen]
        return index, masked, used
