"""Pictures of a KF evaluation: per-task accuracy against the teacher, the leakage matrices
(cross-probes, per-TSN importances), disentanglement scores and linear-probe transfer
(matplotlib figures for tasks.training.plots)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks.training.plots import plt


def grouped_bars(
    groups: dict[str, dict[str, float]], ylabel: str, title: str, ylim: tuple[float, float] | None = (0, 1.05)
):
    """Bars for every (group, series) pair: groups on the x axis, one colour per series."""
    labels = list(groups)
    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(labels) * max(1, len(series)) + 1.5), 3.6))
    for i, name in enumerate(series):
        values = [groups[g].get(name, np.nan) for g in labels]
        ax.bar(np.arange(len(labels)) + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=30 if len(labels) > 6 else 0,
        ha="right" if len(labels) > 6 else "center",
        fontsize=8,
    )
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def matrix_figure(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], label: str, title: str):
    """A heat map of matrix[r, c] with its values written in the cells."""
    fig, ax = plt.subplots(figsize=(1.6 + 0.5 * len(columns), 1.0 + 0.45 * len(rows)))
    image = ax.imshow(matrix, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("task")
    for r in range(len(rows)):
        for c in range(len(columns)):
            ax.text(c, r, f"{matrix[r, c]:.2f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(image, ax=ax, fraction=0.046, label=label)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
