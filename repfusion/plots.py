"""RepFusion's pictures: a grid of DDPM samples, and where the timestep policy sends the
images, epoch by epoch."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def sample_grid_figure(images: torch.Tensor, title: str = "") -> plt.Figure:
    """(N, C, H, W) images in [0, 1] on a square-ish grid."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = torch.ones(c, rows * (h + 2), cols * (w + 2))
    for i, image in enumerate(images.clamp(0, 1)):
        r, k = divmod(i, cols)
        canvas[:, r * (h + 2) + 1 : r * (h + 2) + 1 + h, k * (w + 2) + 1 : k * (w + 2) + 1 + w] = image
    fig, ax = plt.subplots(figsize=(cols * 0.7 + 0.4, rows * 0.7 + 0.6))
    array = canvas.permute(1, 2, 0).numpy()
    ax.imshow(array[..., 0] if c == 1 else array, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=8)
    return fig


def timestep_figure(histograms: np.ndarray, num_timesteps: int, title: str = "") -> plt.Figure:
    """`histograms`: (epochs, bins) counts of the sampled t. Left: share of t per bin and
    epoch; right: the first and last epoch's distributions against uniform."""
    counts = np.asarray(histograms, dtype=float)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    epochs, bins = share.shape
    fig, (heat, last) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.4, 1]})
    image = heat.imshow(
        share,
        aspect="auto",
        origin="lower",
        cmap="viridis",
        extent=(0, num_timesteps, 0.5, epochs + 0.5),
        interpolation="nearest",
    )
    heat.set_xlabel("timestep t")
    heat.set_ylabel("epoch")
    heat.yaxis.set_major_locator(MaxNLocator(integer=True))
    heat.set_title("share of images per t bin")
    fig.colorbar(image, ax=heat, fraction=0.046)
    edges = np.linspace(0, num_timesteps, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    last.step(centres, share[0], where="mid", label="epoch 1", color="#999999")
    last.step(centres, share[-1], where="mid", label=f"epoch {epochs}", color="#C44E52")
    last.axhline(1 / bins, ls="--", color="k", lw=0.8, label="uniform")
    last.set_xlabel("timestep t")
    last.set_ylabel("share")
    last.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def oracle_figure(
    curve: list[dict],
    distill: list[dict],
    policies: list[dict],
    num_timesteps: int,
    title: str = "",
    knn_key: str = "val/knn_acc",
) -> plt.Figure:
    """Top: the probe's cross-entropy over fixed t, with each rl policy's final t
    distribution drawn over it (right axis). Bottom: the k-NN accuracy of the student after
    a short fixed-t distillation, where one was run."""
    rows = 2 if distill else 1
    fig, axes = plt.subplots(rows, 1, figsize=(8, 3.4 * rows), sharex=True, squeeze=False)
    top = axes[0, 0]
    t = [r["t"] for r in curve]
    spread = [r.get("ce_std") or 0.0 for r in curve]
    top.errorbar(
        t,
        [r["ce"] for r in curve],
        yerr=spread,
        fmt="o-",
        color="#4C72B0",
        capsize=3,
        label="probe cross-entropy (fixed t; mean ± std of fits)",
    )
    top.set_ylabel("probe cross-entropy", color="#4C72B0")
    top.set_title(title or "where t is informative", fontsize=10)
    if policies:
        share_axis = top.twinx()
        for i, policy in enumerate(policies):
            share = np.asarray(policy["share"])
            edges = np.linspace(0, num_timesteps, len(share) + 1)
            label = f"{Path(policy['run']).name}: E[CE] x{policy['ratio']:.2f}"
            share_axis.stairs(share, edges, fill=True, alpha=0.25, color=f"C{i + 1}", label=label)
        share_axis.set_ylabel("share of images (rl policy, last epoch)")
        share_axis.set_ylim(0, None)
        share_axis.legend(fontsize=7, loc="upper right")
    top.legend(fontsize=7, loc="upper left")
    if distill:
        bottom = axes[1, 0]
        shown = [d for d in distill if knn_key in d]
        bottom.plot([d["t"] for d in shown], [d[knn_key] for d in shown], "s-", color="#C44E52")
        bottom.set_ylabel(f"student {knn_key}\n(short fixed-t stage 1)")
    axes[-1, 0].set_xlabel("timestep t")
    axes[-1, 0].set_xlim(0, num_timesteps)
    fig.tight_layout()
    return fig
