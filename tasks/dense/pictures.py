"""Pictures of dense predictions: label maps (true against predicted) and keypoints (true
against predicted) for a few samples, as matplotlib figures for `tasks.training.plots.log_figure`."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def palette(num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(256, 3) RGB colours in [0, 1]: black background (class 0), distinct hues for the
    classes, white for the ignore index."""
    colours = np.zeros((256, 3))
    cmap = plt.get_cmap("tab20" if num_classes <= 21 else "hsv")
    for c in range(1, num_classes):
        colours[c] = cmap((c - 1) % 20 / 20 if num_classes <= 21 else (c - 1) / max(1, num_classes - 1))[:3]
    colours[ignore_index % 256] = 1.0
    return colours


def _image(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def mask_figure(
    images: torch.Tensor,
    true: torch.Tensor,
    pred: torch.Tensor,
    num_classes: int,
    ignore_index: int = 255,
    title: str = "",
) -> plt.Figure:
    """One column per sample: the image, the true label map, the predicted one."""
    n = images.shape[0]
    colours = palette(num_classes, ignore_index)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.0), squeeze=False)
    for i in range(n):
        panels = (
            _image(images[i]),
            colours[true[i].long().cpu().numpy() % 256],
            colours[pred[i].long().cpu().numpy() % 256],
        )
        for row, panel in enumerate(panels):
            axes[row, i].imshow(panel, interpolation="nearest")
            axes[row, i].axis("off")
    for row, label in enumerate(("image", "true", "predicted")):
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def keypoint_figure(
    images: torch.Tensor, true: torch.Tensor, pred: torch.Tensor, visible: torch.Tensor | None = None, title: str = ""
) -> plt.Figure:
    """One panel per sample: true keypoints (green circles), predicted ones (red crosses),
    and a line from each true point to its prediction."""
    n = images.shape[0]
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        ax = axes.flat[i]
        ax.imshow(_image(images[i]), interpolation="bilinear")
        t, p = true[i].detach().cpu().numpy(), pred[i].detach().cpu().numpy()
        keep = np.ones(len(t), bool) if visible is None else visible[i].detach().cpu().numpy() > 0
        for (tx, ty), (qx, qy) in zip(t[keep], p[keep]):
            ax.plot([tx, qx], [ty, qy], color="yellow", linewidth=0.6)
        ax.scatter(t[keep, 0], t[keep, 1], s=10, facecolors="none", edgecolors="lime", linewidths=0.8)
        ax.scatter(p[keep, 0], p[keep, 1], s=10, c="red", marker="x", linewidths=0.8)
    fig.suptitle(title + "  (green: true, red: predicted)", fontsize=9)
    fig.tight_layout()
    return fig
