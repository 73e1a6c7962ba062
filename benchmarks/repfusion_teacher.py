"""The diffusion teacher's truncated forward (stopped at the tapped mid-block layer, the
decoder never runs) against the full U-Net forward that yields the same feature, side by
side, for the digits teacher and the google/ddpm-cifar10-32 architecture (random weights:
the cost does not depend on them, and nothing is downloaded).

    python -m benchmarks.repfusion_teacher [--batch 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from diffusers import UNet2DModel

from benchmarks.common import record, side_by_side
from repfusion.teacher import DiffusionTeacher

# The digits teacher (conf/model/ddpm.yaml + experiment ddpm_digits) and google/ddpm-cifar10-32's config.
ARCHITECTURES = {
    "digits_16px": dict(
        sample_size=16,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
    ),
    "ddpm_cifar10_32px": dict(
        sample_size=32,
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
        norm_eps=1e-6,
    ),
}


def save_teacher(folder: str, architecture: dict) -> str:
    torch.manual_seed(0)
    UNet2DModel(in_channels=3, out_channels=3, **architecture).save_pretrained(folder, safe_serialization=True)
    return folder


def teachers(folder: str, architecture: dict) -> tuple[DiffusionTeacher, DiffusionTeacher]:
    save_teacher(folder, architecture)
    common = dict(input_mean=[0.5] * 3, input_std=[0.5] * 3)
    return DiffusionTeacher(folder, **common).eval(), DiffusionTeacher(folder, truncate=False, **common).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = {}
    for name, architecture in ARCHITECTURES.items():
        with tempfile.TemporaryDirectory() as folder:
            truncated, full = teachers(folder, architecture)
            x = torch.randn(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            t = torch.randint(0, 1000, (args.batch,), generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                assert torch.equal(truncated(x, t), full(x, t)), "truncation changed the feature"
                times = side_by_side(
                    {"truncated": lambda: truncated(x, t), "full": lambda: full(x, t)}, rounds=args.rounds
                )
        results[name] = {
            "feature": [truncated.channels, *truncated.feature_size],
            "seconds_per_batch": times,
            "speedup_truncated_over_full": times["full"] / times["truncated"],
        }
    record(
        "repfusion_teacher",
        {
            "what": f"teacher feature (mid_block.resnets.1.conv2) for a batch of {args.batch}, "
            "truncated vs full U-Net forward, no_grad, CPU",
            "rounds": args.rounds,
            **results,
        },
    )


if __name__ == "__main__":
    main()
