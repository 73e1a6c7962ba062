"""Pictures: saved to `<run dir>/plots/` and sent to every logger that takes images."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from pytorch_lightning.utilities import rank_zero_only  # noqa: E402


def plots_dir(trainer) -> Path:
    path = Path(trainer.default_root_dir) / "plots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@rank_zero_only
def log_figure(trainer, fig: plt.Figure, name: str, step: int | None = None) -> Path:
    """Save `fig` as plots/<name>.png, log it to W&B / TensorBoard, close it."""
    path = plots_dir(trainer) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    step = trainer.global_step if step is None else step
    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "WandbLogger":
            logger.log_image(key=f"plots/{name}", images=[str(path)], step=step)
        elif kind == "TensorBoardLogger":
            logger.experiment.add_figure(f"plots/{name}", fig, global_step=step)
    plt.close(fig)
    return path
