"""The diffusion teacher: a diffusers UNet2DModel (hub id, local folder, or this project's
DDPM export) read at one named layer for images at chosen timesteps. The forward stops as
soon as that layer has fired, so the decoder never runs.

Inputs arrive normalised the way the student sees them; the teacher always gets its own
range, [-1, 1]. With `noise=false` (the original code) it sees the clean image and t enters
only through the time embedding; with `noise=true` it sees x_t ~ q(x_t | x_0), as the
paper's notation reads. Owners attach it with `tasks.distill.frozen.attach_frozen`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import torch
import torch.nn as nn
from diffusers import DDPMScheduler, UNet2DModel

from repfusion.pixels import PixelRange
from tasks.config.types import AtLeastOne, Choices
from tasks.distill.taps import FeatureTap
from tasks.errors import UserError
from tasks.io.files import check_weights, read_json
from tasks.run.summary import finished

# The last ResNet block of the middle block, its second conv: before the skip-add (as the original).
DEFAULT_LAYER = "mid_block.resnets.1.conv2"
MAKE_DIGITS_TEACHER = (
    "python train.py experiment=ddpm_digits (its export/unet is a teacher), "
    "or the whole chain: python -m tasks.chain repfusion_digits"
)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def latest_export(task: str, runs_dir: str | Path) -> Path:
    """The export/unet of the newest finished run of `task` under `<runs_dir>/<task>/runs/`."""
    root = Path(runs_dir) / task / "runs"
    found = [p for p in root.glob("*/export/unet") if finished(p.parents[1])]
    if not found:
        raise UserError(
            f"No finished '{task}' run with an export/unet under {root}. Make the teacher first: "
            f"{MAKE_DIGITS_TEACHER}; or set model.teacher.source=<folder or hub id>."
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def unet_folder(path: Path) -> Path:
    """The folder holding the U-Net's config.json and safetensors weights (a pipeline
    folder's `unet/`, or the folder itself). A pickle-only folder is refused."""
    if (path / "unet" / "config.json").is_file():
        path = path / "unet"
    if not (path / "config.json").is_file():
        raise UserError(
            f"Teacher folder {path} has no config.json: it is not a diffusers UNet2DModel folder "
            f"(save one with unet.save_pretrained(folder, safe_serialization=True))."
        )
    read_json(path / "config.json", "Teacher U-Net config", keys=("_class_name",))
    for weights in path.glob("*.safetensors"):
        check_weights(weights, "Teacher U-Net weights")
    if not list(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.ckpt"))
        what = f"only pickle weights ({', '.join(pickles)})" if pickles else "no weight file"
        raise UserError(
            f"Teacher folder {path} holds {what}. Teachers load from safetensors only, since a pickle can run code "
            "when loaded. Convert it once where you trust the file: UNet2DModel.from_pretrained(folder)"
            ".save_pretrained(folder, safe_serialization=True)."
        )
    return path


def _from_pretrained(source: str, **kwargs) -> UNet2DModel:
    # safetensors only: a pickled .bin could run code when loaded.
    return UNet2DModel.from_pretrained(source, use_safetensors=True, low_cpu_mem_usage=False, **kwargs)


def load_unet(
    source: str, runs_dir: str | Path | None = None, subfolder: str | None = None, offline: bool = False
) -> UNet2DModel:
    """A UNet2DModel from a local folder, `latest:<task>` (newest finished run of that task
    under runs_dir), or a Hugging Face hub id (needs the network or the hub cache)."""
    if source.startswith("latest:"):
        return _from_pretrained(str(latest_export(source.split(":", 1)[1], runs_dir or "logs")))
    path = Path(source).expanduser()
    if path.exists():
        return _from_pretrained(str(unet_folder(path / subfolder if subfolder else path)))
    if not _HUB_ID.fullmatch(source) or source.startswith(("/", ".", "~")):
        raise UserError(
            f"Teacher folder not found: {source}. Make it with {MAKE_DIGITS_TEACHER}; or set "
            "model.teacher.source=<a UNet2DModel folder or a hub id such as google/ddpm-cifar10-32>."
        )
    try:
        return _from_pretrained(source, subfolder=subfolder, local_files_only=offline)
    except Exception as err:  # network, missing repo, missing safetensors file: one message with the routes
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"Could not load the teacher '{source}' from a local folder (there is none) or the Hugging Face hub "
            f"({type(err).__name__}: {first}). Online, check the id and that it has safetensors weights; offline, "
            f"download it once while online, or use a local teacher: {MAKE_DIGITS_TEACHER}."
        ) from None


class DiffusionTeacher(nn.Module):
    def __init__(
        self,
        source: str,
        layer: str = DEFAULT_LAYER,
        noise: bool = False,
        num_train_timesteps: AtLeastOne = 1000,
        beta_schedule: str = "linear",
        truncate: bool = True,
        image_size: AtLeastOne | None = None,
        dtype: Annotated[str | None, Choices("repfusion.teacher._DTYPES")] = None,
        channels_last: bool = False,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        subfolder: str | None = None,
        offline: bool = False,
        runs_dir: str | None = None,
    ):
        """`source`: folder, hub id or `latest:<task>`. `layer`: dotted module name (a wrong one
        lists the valid ones). `image_size`: resize inputs to it (null: the U-Net's
        `sample_size`, the resolution it was trained at). `dtype`:
        float32 | bfloat16 | float16 for the U-Net's weights (null: as loaded)."""
        super().__init__()
        if dtype is not None and dtype not in _DTYPES:
            raise UserError(f"teacher.dtype={dtype!r} is not one of {sorted(_DTYPES)} (or null).")
        self.source, self.layer, self.noise = source, layer, noise
        self.unet = load_unet(source, runs_dir, subfolder, offline)
        native = self.unet.config.sample_size
        self.image_size = image_size or (native if isinstance(native, int) else native[0])
        if dtype is not None:
            self.unet.to(dtype=_DTYPES[dtype])
        self.channels_last = channels_last
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self.tap = FeatureTap(self.unet, [layer], stop_early=truncate)
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule)
        self.num_timesteps = num_train_timesteps
        self.pixels = PixelRange(input_mean, input_std)
        self.channels, self.feature_size = self._probe_shape()

    def _probe_shape(self) -> tuple[int, tuple[int, ...]]:
        with torch.no_grad():
            x = torch.zeros(1, self.unet.config.in_channels, self.image_size, self.image_size, dtype=self.unet.dtype)
            feature = self.tap(lambda: self.unet(x, torch.zeros(1, dtype=torch.long)))[self.layer]
        return feature.shape[1], tuple(feature.shape[2:])

    def set_input_normalization(self, datamodule) -> None:
        self.pixels.set_from(datamodule, "The diffusion teacher")

    def prepare(self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The U-Net's input for normalised images x at timesteps t: [-1, 1], resized, noised if asked."""
        x0 = self.pixels.to_unit(x, self.image_size)
        if self.noise:
            eps = torch.randn(x0.shape, generator=generator, device=generator.device if generator else x0.device)
            x0 = self.noise_scheduler.add_noise(x0, eps.to(x0.device), t.to(x0.device))
        x0 = x0.to(self.unet.dtype)
        return x0.contiguous(memory_format=torch.channels_last) if self.channels_last else x0

    def forward(self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The tapped feature (float32) of normalised images x at integer timesteps t (shape B)."""
        unet_input = self.prepare(x, t, generator)
        return self.tap(lambda: self.unet(unet_input, t))[self.layer].float()
