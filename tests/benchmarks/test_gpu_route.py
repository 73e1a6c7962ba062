"""The GPU route's smoke mode runs here, on the CPU: the anchor trains, its report and
summary are written, and the FLOP count of one timed step equals a plain PyTorch count of
the same training step (ResNet-18 forward + backward)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tasks.backbones import create_backbone
from tests.conftest import ROOT
from tests.tasks.test_fashion import HAS_REAL

pytestmark = pytest.mark.skipif(not HAS_REAL, reason="Fashion-MNIST not installed (make fashion)")


def plain_step_flops(batch: int) -> float:
    model = create_backbone("resnet18", num_classes=10, small_input_stem=True)
    x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()  # the augmentation's affine grid and the SGD update count no FLOPs here


@pytest.mark.slow
def test_smoke_mode_runs_the_anchor_and_counts_the_step_flops(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu.studies", "--smoke", "--only", "anchor",
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    records = json.loads((out / "gpu_summary.json").read_text())
    assert [r["name"] for r in records] == ["anchor"] and records[0]["exit_code"] == 0
    assert set(records[0]["summary"]["test"]) == {"test/acc", "test/acc_top5", "test/loss"}
    timed = records[0]["throughput"]
    assert [(t["batch_size"], t["channels_last"]) for t in timed] == [(16, False), (16, True)]
    assert timed[0]["flops_per_step"] == plain_step_flops(16)
    assert timed[0]["tflops"] == pytest.approx(timed[0]["flops_per_step"] / timed[0]["step_s"] / 1e12)
    report = (out / "gpu_report.md").read_text()
    assert "CPU smoke mode" in report and "| anchor | 0 |" in report and "| anchor | 16 | True | False |" in report
