"""eval.py's predict mode: every image below a folder, read through tasks.io.files.read_image,
preprocessed as the network expects (timm's eval transform from its data config: resize,
centre crop, mean/std), classified by Lightning's trainer.predict, and written to one CSV
(path, predicted class index, its name when known, probability, the top-k)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from tasks.data.folder import _EXTENSIONS as IMAGE_SUFFIXES
from tasks.errors import UserError
from tasks.io import files


def list_images(folder: str | Path) -> list[Path]:
    """Every image file below `folder`, sorted; one message when there is none."""
    folder = files.require_dir(folder, "Image folder (data_dir)", "Set data_dir=<folder of images>.")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        held = sorted(p.name for p in folder.iterdir())[:12]
        raise UserError(
            f"Image folder {folder} holds no image ({' '.join(sorted(IMAGE_SUFFIXES))}, searched "
            f"recursively; it holds {held}). Point data_dir= at a folder of images."
        )
    return found


class ImageFiles(Dataset):
    def __init__(self, paths: list[Path], transform: Any, mode: str):
        self.paths, self.transform, self.mode = paths, transform, mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(files.read_image(self.paths[i], "Image", self.mode))  # a broken image is named


def eval_transform(preprocessing: dict[str, Any]):
    """timm's eval transform for a data config (input_size, interpolation, mean, std, crop_pct)."""
    from timm.data import create_transform

    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return create_transform(**{k: preprocessing[k] for k in keys if k in preprocessing}, is_training=False)


def image_loader(paths: list[Path], preprocessing: dict[str, Any], batch_size: int) -> DataLoader:
    if "unknown" in preprocessing:
        raise UserError(
            f"The preprocessing of this network is unknown: {preprocessing['unknown']}. Predict with "
            "the run's export (ckpt=<run dir>/export), whose card holds it."
        )
    channels = int(preprocessing.get("input_size", (3,))[0])
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise UserError(f"The network expects {channels}-channel images; predict reads grey (1) or RGB (3) images.")
    return DataLoader(ImageFiles(paths, eval_transform(preprocessing), mode), batch_size=batch_size)


def class_scores(outputs: list[Any], num_images: int) -> torch.Tensor:
    """The (N, classes) logits of trainer.predict's batches; one message when the module gives none."""
    if not outputs or not all(isinstance(o, torch.Tensor) and o.ndim == 2 for o in outputs):
        kinds = sorted({type(o).__name__ for o in outputs or []})
        raise UserError(
            f"The network's predictions are {kinds}, not class scores (N, classes): predict supports classifiers."
        )
    logits = torch.cat([o.float().cpu() for o in outputs])
    if len(logits) != num_images:
        raise UserError(f"The network returned {len(logits)} predictions for {num_images} images.")
    return logits


def predictions_csv(paths: list[Path], root: Path, logits: torch.Tensor, top_k: int, names: list[str] | None) -> str:
    """The CSV text: one row per image, its path relative to `root`."""
    probs = torch.softmax(logits, dim=1)
    k = min(top_k, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=1)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "path",
            "class_index",
            *(["class_name"] if names else []),
            "probability",
            f"top{k}_classes",
            f"top{k}_probabilities",
        ]
    )
    for path, p, i in zip(paths, top_p.tolist(), top_i.tolist()):
        name = [names[i[0]]] if names else []
        writer.writerow(
            [
                path.relative_to(root).as_posix(),
                i[0],
                *name,
                f"{p[0]:.6f}",
                " ".join(str(c) for c in i),
                " ".join(f"{v:.6f}" for v in p),
            ]
        )
    return buffer.getvalue()
