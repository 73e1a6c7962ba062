"""Peak memory of RepFusion stage 1 against training the student alone, on the CPU: each
candidate runs in a fresh subprocess (Lightning fit, N steps on the digits, batch 64) and
reports its peak resident set size (getrusage ru_maxrss). A third subprocess builds the
same data and student without training, so the increments over it can be read too. RSS
counts everything the process holds (Python, torch, the allocator's cache), which is what a
user's machine has to provide.

    python -m benchmarks.repfusion_memory [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile

import pytorch_lightning as pl

from benchmarks.classifier_throughput import lightning_run as classifier_run
from benchmarks.classifier_throughput import make_data
from benchmarks.common import record
from benchmarks.repfusion_step import lightning_run as stage1_run
from benchmarks.repfusion_teacher import ARCHITECTURES, save_teacher
from tasks.models.backbones import create_backbone

CANDIDATES = ("idle", "student_only", "stage1")


def child(kind: str, steps: int) -> None:
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    pl.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as folder:
        if kind == "idle":
            make_data(), create_backbone("resnet18", num_classes=10)
        elif kind == "student_only":
            classifier_run(steps)()
        else:
            save_teacher(folder, ARCHITECTURES["digits_16px"])
            stage1_run(folder, steps)()
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--child", choices=CANDIDATES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.steps)
    peaks = {}
    for kind in CANDIDATES:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.repfusion_memory", "--child", kind, "--steps", str(args.steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[kind] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    record(
        "repfusion_memory",
        {
            "what": f"peak RSS (MB) of a fresh process: {args.steps} training steps of ResNet-18 on digits 32x32, "
            "batch 64, CPU; "
            "stage1 adds the digits-teacher U-Net (truncated, no_grad), the rl policy, probe, adapter and the EMA copy",
            "steps": args.steps,
            "peak_rss_mb": peaks,
            "training_increment_mb": {k: peaks[k] - peaks["idle"] for k in ("student_only", "stage1")},
            "ratio_stage1_over_student_only": peaks["stage1"] / peaks["student_only"],
        },
    )


if __name__ == "__main__":
    main()
