"""The DDPM trainer: a diffusers UNet2DModel learns to predict the noise of
DDPMScheduler's forward process (T = 1000) on any DataModule, shows a grid of DDIM samples
each validation epoch, and exports itself with `save_pretrained` (safetensors) as a
diffusers pipeline folder whose `unet/` is a RepFusion teacher.

    python train.py experiment=ddpm_digits      # the offline teacher for the digits
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

from repfusion.pixels import PixelRange
from repfusion.plots import sample_grid_figure
from tasks.config.types import AtLeastOne, Count, Probability
from tasks.training.ema import ModelEMA
from tasks.training.optim import configure_optimizers
from tasks.training.plots import log_figure


@torch.no_grad()
def generate(
    unet: UNet2DModel, noise_scheduler: DDPMScheduler, num_images: int, steps: int, generator: torch.Generator
) -> torch.Tensor:
    """`num_images` samples in [-1, 1] by deterministic DDIM (eta 0) over `steps` steps of the
    same noise schedule; the starting noise comes from `generator` (on the CPU)."""
    sampler = DDIMScheduler.from_config(noise_scheduler.config)
    sampler.set_timesteps(steps)
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    device = next(unet.parameters()).device
    x = torch.randn((num_images, unet.config.in_channels, *size), generator=generator).to(device)
    for t in sampler.timesteps:
        eps = unet(x, t.to(device)).sample.float()
        x = sampler.step(eps, t, x).prev_sample
    return x.clamp(-1, 1)


class DDPMModule(pl.LightningModule):
    def __init__(
        self,
        unet: UNet2DModel,
        optimizer: Callable,
        scheduler: Callable | None = None,
        num_train_timesteps: AtLeastOne = 1000,
        beta_schedule: str = "linear",
        num_samples: Count = 16,
        sample_steps: AtLeastOne = 50,
        sample_every_n_epochs: Count = 1,
        image_size: AtLeastOne | None = None,
        ema_decay: Probability | None = 0.999,
        input_mean: list[float] | None = None,
        input_std: list[float] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["unet", "optimizer", "scheduler"])
        self.unet = unet
        # Samples, validation and the export use the average (with a warm-up, see ModelEMA).
        self.ema = ModelEMA(unet, ema_decay) if ema_decay else None
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule)
        self.pixels = PixelRange(input_mean, input_std)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

    def setup(self, stage: str) -> None:
        if self.trainer is not None and self.trainer.datamodule is not None:
            self.pixels.set_from(self.trainer.datamodule, "The DDPM trainer")

    @property
    def averaged_unet(self) -> UNet2DModel:
        return self.ema.model if self.ema is not None else self.unet

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update(self.unet)

    def _loss(
        self, x: torch.Tensor, generator: torch.Generator | None = None, unet: UNet2DModel | None = None
    ) -> torch.Tensor:
        """Noise-prediction MSE at one random t per image (float32)."""
        x0 = self.pixels.to_unit(x, self.hparams.image_size)
        n = x0.shape[0]
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (n,), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        xt = self.noise_scheduler.add_noise(x0, noise, t)
        return F.mse_loss((unet or self.unet)(xt, t).sample.float(), noise)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch[0])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        # The same t and noise every epoch, so the curve compares like with like.
        generator = torch.Generator().manual_seed(1_000 + batch_idx)
        self.log(
            f"{stage}/loss",
            self._loss(batch[0], generator, self.averaged_unet),
            on_epoch=True,
            prog_bar=stage == "val",
            sync_dist=True,
            batch_size=batch[0].shape[0],
        )

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        epoch = self.current_epoch
        if self.trainer.sanity_checking or not self.trainer.is_global_zero or self.hparams.num_samples <= 0:
            return
        last = epoch + 1 >= (self.trainer.max_epochs or 0)
        if (epoch + 1) % self.hparams.sample_every_n_epochs and not last:
            return
        images = self.samples()
        title = f"DDIM samples ({self.hparams.sample_steps} steps), epoch {epoch + 1}"
        fig = sample_grid_figure((images.cpu() + 1) / 2, title)
        path = log_figure(self.trainer, fig, "samples")
        if path is not None:
            shutil.copyfile(path, path.with_name(f"samples_epoch{epoch + 1:03d}.png"))

    def samples(self, num_images: int | None = None, seed: int = 0) -> torch.Tensor:
        """A fixed set of samples in [-1, 1] (the same starting noise every call)."""
        unet = self.averaged_unet
        was_training = unet.training
        unet.eval()
        try:
            return generate(
                unet,
                self.noise_scheduler,
                num_images or self.hparams.num_samples,
                self.hparams.sample_steps,
                torch.Generator().manual_seed(seed),
            )
        finally:
            unet.train(was_training)

    def configure_optimizers(self):
        return configure_optimizers(
            self, [p for p in self.parameters() if p.requires_grad], self.optimizer_factory, self.scheduler_factory
        )

    def export_artifacts(self, export_dir: Path) -> dict[str, str]:
        """A diffusers pipeline folder (safetensors): `unet/` (the averaged U-Net) is the teacher to load."""
        export_dir = Path(export_dir)
        pipeline = DDPMPipeline(unet=self.averaged_unet, scheduler=self.noise_scheduler)
        pipeline.save_pretrained(export_dir, safe_serialization=True)
        return {"unet": str(export_dir / "unet"), "pipeline": str(export_dir)}
