"""Pictures of a KF evaluation: per-task accuracy against the teacher, the leakage matrix,
disentanglement scores and linear-probe transfer (matplotlib figures for tasks.plots)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tasks.plots import plt


def grouped_bars(groups: dict[str, dict[str, float]], ylabel: str, title: str, ylim: tuple[float, float] | None = (0, 1.05)):
    """Bars for every (group, series) pair: groups on the x axis, one colour per series."""
    labels = list(groups)
    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(labels) * max(1, len(series)) + 1.5), 3.6))
    for i, name in enumerate(series):
        values = [groups[g].get(name, np.nan) for g in labels]
        ax.bar(np.arange(len(labels)) + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def leakage_figure(matrix: np.ndarray, names: Sequence[str]):
    """M[i, j]: change in task j's accuracy when TSN_i is dropped (rows: dropped factor)."""
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(names), 1.0 + 0.45 * len(names)))
    bound = max(1e-6, float(np.abs(matrix).max()))
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-bound, vmax=bound)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("task j")
    ax.set_ylabel("factor i dropped")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{matrix[i, j]:.2f}" if matrix[i, j] else "0", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=ax, fraction=0.046, label="accuracy drop")
    ax.set_title("leakage: accuracy drop of task j without TSN_i", fontsize=9)
    fig.tight_layout()
    return fig
