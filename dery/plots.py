"""DeRy's pictures: CKA heatmaps between the nodes of every member pair, the partition
(which nodes of which member form each block, coloured by equivalence set) and the
reassembled architecture. Saved as PNG (non-training stages write their run's plots/)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from tasks.io.files import atomic_path  # noqa: E402

SET_COLOURS = plt.get_cmap("tab10").colors


def _save(fig, path: Path) -> Path:
    try:
        with atomic_path(path) as temp:
            fig.savefig(temp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_cka(cka: torch.Tensor, members: Mapping[str, Any], offsets: Mapping[str, int], path: Path) -> Path:
    """Grid of node-output CKA heatmaps, one panel per member pair (rows x columns)."""
    names = list(members)
    size = max(2.2, 11 / len(names))
    fig, axes = plt.subplots(len(names), len(names), figsize=(size * len(names), size * len(names)), squeeze=False)
    for r, a in enumerate(names):
        for c, b in enumerate(names):
            ra = offsets[a] + 1 + torch.arange(len(members[a].nodes))
            cb = offsets[b] + 1 + torch.arange(len(members[b].nodes))
            image = axes[r][c].imshow(cka[ra][:, cb].numpy(), vmin=0, vmax=1, cmap="magma", aspect="auto")
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if c == 0:
                axes[r][c].set_ylabel(f"{a}\nnodes", fontsize=8)
            if r == len(names) - 1:
                axes[r][c].set_xlabel(f"{b} nodes", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="linear CKA of node outputs")
    fig.suptitle("DeRy: node similarity (linear CKA, pooled outputs)")
    return _save(fig, path)


def plot_partition(partition: Mapping[str, Any], path: Path) -> Path:
    """One row per member: its nodes left to right, split into K blocks, coloured by set."""
    members = partition["members"]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(members) + 1.2))
    for row, info in enumerate(members.values()):
        total = sum(len(b["nodes"]) for b in info["blocks"])
        x = 0.0
        for block in info["blocks"]:
            width = len(block["nodes"]) / total
            colour = SET_COLOURS[block["set"] % len(SET_COLOURS)]
            ax.barh(row, width, left=x, color=colour, edgecolor="black", height=0.7)
            label = f"{len(block['nodes'])}n\n{block['params'] / 1e6:.2f}M"
            ax.text(x + width / 2, row, label, ha="center", va="center", fontsize=6)
            x += width
    ax.set_yticks(range(len(members)), list(members))
    ax.invert_yaxis()
    ax.set_xlabel("nodes of the member, in forward order (fraction)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=SET_COLOURS[k % len(SET_COLOURS)]) for k in range(partition["K"])]
    ax.legend(
        handles,
        [f"set {k}" for k in range(partition["K"])],
        ncol=partition["K"],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.18),
        fontsize=8,
    )
    ax.set_title(
        f"DeRy partition: K={partition['K']}, objective {partition['objective']:.3f} (seed {partition['seed']})"
    )
    return _save(fig, path)


def architecture_figure(spec: Mapping[str, Any]) -> plt.Figure:
    """Boxes left to right: stem, (block, adapter)*, head, with shapes and parameters."""
    items = [("stem", f"{spec['stem']['channels']}ch /{spec['stem']['stride']}", "#dddddd")]
    for k, block in enumerate(spec["blocks"]):
        if k > 0:
            adapter = spec["adapters"][k - 1]
            text = f"{adapter['kind']}\n{adapter['in']}->{adapter['out']}\ns{adapter['stride']}"
            items.append(("adapter", text, "#f2c14e"))
        colour = SET_COLOURS[block["set"] % len(SET_COLOURS)]
        nodes = block["nodes"]
        label = nodes[0] if len(nodes) == 1 else f"{nodes[0]}\n..{nodes[-1]}"
        items.append((block["member"], f"{label}\n{block['layout']}", colour))
    items.append(("head", f"pool+fc\n{spec['num_classes']} classes", "#dddddd"))
    fig, ax = plt.subplots(figsize=(1.45 * len(items) + 1, 2.6))
    for i, (title, text, colour) in enumerate(items):
        ax.add_patch(plt.Rectangle((i * 1.4, 0), 1.2, 1.6, color=colour, ec="black"))
        ax.text(i * 1.4 + 0.6, 1.7, title, ha="center", fontsize=7, weight="bold")
        ax.text(i * 1.4 + 0.6, 0.8, text, ha="center", va="center", fontsize=6)
        if i:
            ax.annotate("", (i * 1.4, 0.8), (i * 1.4 - 0.2, 0.8), arrowprops={"arrowstyle": "->"})
    ax.set_xlim(-0.2, 1.4 * len(items))
    ax.set_ylim(-0.2, 2.1)
    ax.axis("off")
    ax.set_title(f"DeRy reassembled: {spec['params'] / 1e6:.3f}M params, {spec['flops'] / 1e6:.1f} MFLOPs")
    return fig


def plot_architecture(spec: Mapping[str, Any], path: Path) -> Path:
    return _save(architecture_figure(spec), path)


def plot_candidates(table: list[dict], best: int, path: Path, proxy: str = "naswot") -> Path:
    """The proxy's score against parameters of the scored candidates; the chosen one in red."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter(
        [r["params"] / 1e6 for r in table], [r[proxy] for r in table], s=10, alpha=0.6, label="feasible candidates"
    )
    ax.scatter([table[best]["params"] / 1e6], [table[best][proxy]], s=60, color="red", label="chosen")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel(proxy)
    ax.legend(fontsize=7)
    return _save(fig, path)
