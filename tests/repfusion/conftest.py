"""RepFusion test fixtures: a small DDPM U-Net saved the way ddpm_digits exports its
teacher (a diffusers pipeline folder, safetensors), and tiny stage-1 settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

# A U-Net like ddpm_digits' (three levels, mid block at 8x8) but narrower.
UNET_KWARGS = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(16, 32, 64),
    down_block_types=("DownBlock2D",) * 3,
    up_block_types=("UpBlock2D",) * 3,
    norm_num_groups=8,
)


def make_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**UNET_KWARGS)


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    """<dir>/unet (config.json + safetensors) and <dir>/scheduler, as DDPMModule exports."""
    out = tmp_path_factory.mktemp("teacher")
    pipeline = DDPMPipeline(unet=make_unet(), scheduler=DDPMScheduler(num_train_timesteps=1000))
    pipeline.save_pretrained(out, safe_serialization=True)
    return out


def stage1_overrides(teacher: Path, *extra: str) -> list[str]:
    """A stage-1 run on the digits that takes seconds: a tiny timm student, small batches."""
    return [
        "experiment=repfusion_digits",
        f"model.teacher.source={teacher}",
        "model.student.name=test_resnet",
        "data.batch_size=16",
        "+data.eval_batch_size=64",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=1",
        "trainer.num_sanity_val_steps=0",
        "logger=csv",
        "trainer.enable_model_summary=false",
        *extra,
    ]
