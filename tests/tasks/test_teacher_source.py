"""The one teacher-source grammar (every form parsed to the right kind), its timm loader
(exports with their normalisation, checkpoints with a strict head) and `latest:` / `run:`."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tasks.distill import teacher_source as ts
from tasks.errors import UserError
from tasks.models.backbones import create_backbone, export_timm

TINY = {"channels": [8, 16, 32, 64], "stem_width": 8}
DATA = {"mean": [0.25, 0.5, 0.75], "std": [0.5, 0.25, 0.125], "input_size": [3, 32, 32], "num_classes": 10}


def _net(seed: int = 0, num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_backbone("resnet10t", num_classes=num_classes, **TINY).eval()


def _finished_run(root, task: str, name: str, mtime: int) -> object:
    run = root / task / "runs" / name
    export_timm(_net(mtime), run / "export", data=DATA)
    (run / "summary.json").write_text(json.dumps({"status": "finished"}))
    os.utime(run / "export", (mtime, mtime))
    return run


def test_every_form_parses_to_its_kind(tmp_path):
    export = tmp_path / "export"
    export_timm(_net(), export)
    unet = tmp_path / "ddpm" / "unet"
    unet.mkdir(parents=True)
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    (tmp_path / "w.ckpt").write_bytes(b"")
    forms = {
        str(export): ts.EXPORT,
        str(export / "config.json"): ts.EXPORT,
        f"run:{export.parent}": ts.EXPORT,
        str(tmp_path / "w.ckpt"): ts.WEIGHTS,
        f"file:{tmp_path / 'w.ckpt'}": ts.WEIGHTS,
        str(tmp_path / "ddpm"): ts.DIFFUSERS,
        str(unet): ts.DIFFUSERS,
        "google/ddpm-cifar10-32": ts.DIFFUSERS_HUB,
        "hub:resnet50.tv_in1k": ts.TIMM_HUB,
        "resnet18": ts.TIMM_NAME,
        "random": ts.RANDOM,
    }
    assert {text: ts.parse_source(text).form for text in forms} == forms
    with pytest.raises(UserError, match=r"does not exist\. Make it with python train\.py experiment=x"):
        ts.parse_source(str(tmp_path / "nope"), make="python train.py experiment=x")
    with pytest.raises(UserError, match="The source is empty"):
        ts.parse_source(" ")


def test_an_export_loads_with_its_training_normalisation(tmp_path):
    export_timm(_net(), tmp_path / "export", data=DATA)
    teacher = ts.load_timm_teacher(str(tmp_path / "export"), num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(teacher(x), _net()(x))
    assert not teacher.training
    assert ts.input_normalization(teacher) == ((0.25, 0.5, 0.75), (0.5, 0.25, 0.125))
    assert ts.input_normalization(_net()) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # timm's default
    with pytest.raises(UserError, match="predicts 10 classes, but 5 are needed"):
        ts.load_timm_teacher(str(tmp_path / "export"), num_classes=5)


def test_a_checkpoint_teacher_never_gets_a_random_head(tmp_path):
    state = {f"net.{k}": v for k, v in _net().state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "best.ckpt")
    source = str(tmp_path / "best.ckpt")
    teacher = ts.load_timm_teacher(source, arch="resnet10t", prefix="net.", num_classes=10, **TINY)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(teacher(x), _net()(x))
    with pytest.raises(UserError, match=r"another shape .*\(10, 64\) vs model \(5, 64\).*weights' \(10\)"):
        ts.load_timm_teacher(source, arch="resnet10t", prefix="net.", num_classes=5, **TINY)
    # a backbone init (strict_head=False) keeps the old rule: a head of another size is left as initialised
    init = ts.load_timm_teacher(source, arch="resnet10t", prefix="net.", num_classes=5, strict_head=False, **TINY)
    assert init.get_classifier().out_features == 5
    body = {k: v for k, v in state.items() if not k.startswith("net.fc.")}
    torch.save({"state_dict": body}, tmp_path / "headless.ckpt")
    with pytest.raises(UserError, match=r"the file has no \['fc.bias', 'fc.weight'\]"):
        ts.load_timm_teacher(str(tmp_path / "headless.ckpt"), arch="resnet10t", prefix="net.", num_classes=10, **TINY)
    with pytest.raises(UserError, match="needs its architecture"):
        ts.load_timm_teacher(source)


def test_latest_and_run_name_the_newest_finished_run(tmp_path):
    _finished_run(tmp_path, "classify_digits", "a", 1_000)
    newest = _finished_run(tmp_path, "classify_digits", "b", 2_000)
    unfinished = _finished_run(tmp_path, "classify_digits", "c", 3_000)
    (unfinished / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    latest = ts.parse_source("latest:classify_digits", runs_dir=tmp_path)
    assert (latest.form, latest.path) == (ts.EXPORT, newest / "export")
    by_run = ts.load_timm_teacher(f"run:{newest}")
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(by_run(x), _net(2_000)(x))
    with pytest.raises(UserError, match=r"No finished 'kf_digits' run with export under .*Make it first: make it"):
        ts.parse_source("latest:kf_digits", runs_dir=tmp_path, make="make it")
