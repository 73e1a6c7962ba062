"""The diffusion teacher: a diffusers UNet2DModel (hub id, local folder, or this project's
DDPM export) read at one named layer for images at chosen timesteps. The forward stops as
soon as that layer has fired, so the decoder never runs.

Inputs arrive normalised the way the student sees them; the teacher always gets its own
range, [-1, 1]. With `noise=false` (the original code) it sees the clean image and t enters
only through the time embedding; with `noise=true` it sees x_t ~ q(x_t | x_0), as the
paper's notation reads. Owners attach it with `tasks.distill.frozen.attach_frozen`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import torch
import torch.nn as nn
from diffusers import DDPMScheduler, UNet2DModel

from repfusion.pixels import PixelRange
from tasks.config.types import AtLeastOne, Choices
from tasks.distill.taps import FeatureTap
from tasks.distill.teacher_source import latest_run
from tasks.distill.teacher_source import load_unet as shared_load_unet
from tasks.errors import UserError

# The last ResNet block of the middle block, its second conv: before the skip-add (as the original).
DEFAULT_LAYER = "mid_block.resnets.1.conv2"
MAKE_DIGITS_TEACHER = (
    "python train.py experiment=ddpm_digits (its export/unet is a teacher), "
    "or the whole chain: python -m tasks.chain repfusion_digits"
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def latest_export(task: str, runs_dir: str | Path) -> Path:
    """The export/unet of the newest finished run of `task` under `<runs_dir>/<task>/runs/`."""
    return latest_run(task, runs_dir, "export/unet", MAKE_DIGITS_TEACHER)


def load_unet(
    source: str, runs_dir: str | Path | None = None, subfolder: str | None = None, offline: bool = False
) -> UNet2DModel:
    """A UNet2DModel from the shared teacher-source grammar (tasks.distill.teacher_source): a
    local folder, `latest:<task>` / `run:<dir>` (its export/unet), or a Hugging Face hub id."""
    return shared_load_unet(source, runs_dir, subfolder, offline, make=MAKE_DIGITS_TEACHER)


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
