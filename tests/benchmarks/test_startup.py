"""The start-up benchmark: its plain side does the framework's work (the same split and images,
network, warps and schedule as train.py experiment=classify_digits), and the harness's smoke
mode runs both sides as whole processes and records medians and ratios of what it timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from benchmarks import startup_plain
from tasks.data import DigitsDataModule, RandomAffine
from tasks.models.backbones import create_backbone
from tasks.training.optim import cosine
from tests.conftest import ROOT


def test_the_plain_side_reads_the_frameworks_split_and_images():
    framework = DigitsDataModule(batch_size=64)  # conf/data/digits.yaml: 32 px, 15 % val, 15 % test, split seed 0
    framework.setup("fit")
    plain = startup_plain.digits()
    for name, subset in (("train", framework.train_set), ("val", framework.val_set), ("test", framework.test_set)):
        x, y = subset.tensors
        assert torch.equal(plain[name][0], x) and torch.equal(plain[name][1], y), name
    assert (startup_plain.MEAN, startup_plain.STD) == (DigitsDataModule.mean[0], DigitsDataModule.std[0])


def test_the_plain_side_trains_the_frameworks_network_with_its_schedule():
    plain, framework = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    rates = []
    for module, make in (
        (plain, lambda o: startup_plain.schedule(o, 19, 10)),
        (framework, lambda o: cosine(o, steps_per_epoch=19, total_steps=190, warmup_epochs=1)),
    ):
        optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
        scheduler, seen = make(optimizer), []
        for _ in range(190):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        rates.append(seen)
    assert rates[0] == rates[1]
    import timm

    net, ours = timm.create_model("resnet18", num_classes=10), create_backbone("resnet18", num_classes=10)
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}


def test_the_plain_warps_are_the_frameworks_augmentation():
    x = torch.rand(8, 3, 32, 32)
    framework = RandomAffine(degrees=10, translate_px=2, scale=(0.9, 1.1))(x, torch.Generator().manual_seed(3))
    plain = startup_plain.affine(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(plain, framework, atol=1e-5, rtol=0)  # 1.1 - 0.9 is 0.2 only up to rounding


@pytest.mark.slow
def test_smoke_mode_runs_both_sides_and_records_their_ratio(tmp_path):
    out = tmp_path / "startup.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.startup", "--smoke", "--results", str(out)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["benchmark"] == "startup_smoke" and (record["epochs"], record["repeats"]) == (1, 1)
    assert record["commands"]["framework"].startswith("python train.py experiment=classify_digits trainer.max_epochs=1")
    for side in ("framework", "plain"):
        (run,) = record["runs"][side]
        assert record[f"{side}_wall_s"] == run["wall_s"] and record[f"{side}_cpu_s"] == run["cpu_s"]
    assert record["ratio_wall"] == record["framework_wall_s"] / record["plain_wall_s"]
    assert record["ratio_cpu"] == record["framework_cpu_s"] / record["plain_cpu_s"]
    assert len(record["load_average_before"]) == 3 and record["cores"] == os.cpu_count()
