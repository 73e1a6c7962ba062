"""The DDPM trainer: a tiny run on the digits logs its loss and sample grid and exports a
safetensors pipeline folder that loads back as a RepFusion teacher."""

from __future__ import annotations

import json

import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from repfusion.ddpm import generate
from repfusion.teacher import DiffusionTeacher
from tasks.io.checkpoints import load_checkpoint
from tests.conftest import TINY, run_in_process
from tests.repfusion.conftest import make_unet

TINY_UNET = [
    "model.unet.block_out_channels=[8,16,16]",
    "model.num_samples=4",
    "model.sample_steps=2",
    "data.batch_size=16",
]


def test_ddpm_digits_trains_samples_and_exports_a_teacher(tmp_path):
    summary = run_in_process(["experiment=ddpm_digits", *TINY, *TINY_UNET], tmp_path)
    assert "test/loss" in summary["test"] and "train/loss" in summary["final"]
    assert (tmp_path / "plots" / "samples.png").is_file() and (tmp_path / "plots" / "samples_epoch001.png").is_file()
    unet_dir = tmp_path / "export" / "unet"
    assert summary["export"]["unet"] == str(unet_dir)
    assert (unet_dir / "diffusion_pytorch_model.safetensors").is_file() and not list(unet_dir.glob("*.bin"))
    scheduler = json.loads((tmp_path / "export" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["num_train_timesteps"] == 1000
    exported = load_file(str(unet_dir / "diffusion_pytorch_model.safetensors"))
    state = load_checkpoint(summary["checkpoints"]["best"])["state_dict"]
    assert all(torch.equal(v, state[f"ema.model.{k}"]) for k, v in exported.items())  # the average is the teacher
    assert not all(torch.equal(v, state[f"unet.{k}"]) for k, v in exported.items())
    teacher = DiffusionTeacher(str(unet_dir), input_mean=[0.5] * 3, input_std=[0.5] * 3)
    assert teacher.image_size == 16  # ddpm_digits trains at 16x16; the teacher resizes to it
    with torch.no_grad():
        feature = teacher(torch.zeros(2, 3, 32, 32), torch.tensor([0, 500]))
    assert feature.shape == (2, 16, 4, 4)


def test_generate_is_deterministic_and_in_range():
    unet = make_unet().eval()
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    a = generate(unet, scheduler, 2, steps=3, generator=torch.Generator().manual_seed(0))
    b = generate(unet, scheduler, 2, steps=3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and a.abs().max() <= 1
