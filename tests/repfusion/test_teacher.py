"""The diffusion teacher: loading (folders, safetensors only, clear errors), the tapped
layer, the truncated forward, the input range it receives, noise, and the frozen contract."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn as nn
from diffusers import DDPMScheduler

from repfusion.teacher import DEFAULT_LAYER, DiffusionTeacher, latest_export, load_unet
from tasks.distill.frozen import attach_frozen
from tasks.errors import UserError

MEAN, STD = [0.3053] * 3, [0.3236] * 3  # the digits' normalisation


def teacher(path, **kwargs):
    return DiffusionTeacher(str(path), input_mean=MEAN, input_std=STD, **kwargs)


def test_loads_pipeline_folder_or_unet_folder(teacher_dir):
    a = load_unet(str(teacher_dir))
    b = load_unet(str(teacher_dir / "unet"))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_default_layer_is_the_last_mid_resnet_conv2(teacher_dir):
    t = teacher(teacher_dir)
    assert t.layer == DEFAULT_LAYER == "mid_block.resnets.1.conv2"
    assert (t.channels, t.feature_size) == (64, (8, 8))


def test_truncated_forward_equals_full_forward_and_skips_the_decoder(teacher_dir):
    truncated, full = teacher(teacher_dir), teacher(teacher_dir, truncate=False)
    x, steps = torch.randn(3, 3, 32, 32), torch.tensor([0, 250, 999])
    calls = {"truncated": 0, "full": 0}
    for name, t in (("truncated", truncated), ("full", full)):
        t.unet.up_blocks[0].register_forward_pre_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    with torch.no_grad():
        a, b = truncated(x, steps), full(x, steps)
    assert calls == {"truncated": 0, "full": 1}
    assert torch.equal(a, b)
    # the tapped tensor is conv2's output, before the skip-add of the ResNet block
    captured = {}
    full.unet.mid_block.resnets[1].register_forward_hook(lambda m, i, o: captured.setdefault("block", o))
    with torch.no_grad():
        full(x, steps)
    assert captured["block"].shape == a.shape and not torch.allclose(captured["block"], a)


def test_teacher_gets_minus_one_to_one_whatever_the_student_normalisation(teacher_dir):
    t = teacher(teacher_dir)
    seen = {}
    t.unet.conv_in.register_forward_pre_hook(lambda m, inputs: seen.setdefault("x", inputs[0]))
    pixels = torch.rand(2, 3, 32, 32)
    normalised = (pixels - MEAN[0]) / STD[0]
    with torch.no_grad():
        t(normalised, torch.tensor([5, 5]))
    assert torch.allclose(seen["x"], pixels * 2 - 1, atol=1e-5)


def test_noise_option_feeds_x_t_from_q(teacher_dir):
    t = teacher(teacher_dir, noise=True)
    pixels = torch.rand(2, 3, 32, 32)
    normalised = (pixels - MEAN[0]) / STD[0]
    steps = torch.tensor([10, 900])
    generator = torch.Generator().manual_seed(0)
    x_t = t.prepare(normalised, steps, generator)
    eps = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = DDPMScheduler(num_train_timesteps=1000).add_noise(pixels * 2 - 1, eps, steps)
    assert torch.allclose(x_t, expected, atol=1e-5)
    clean = teacher(teacher_dir).prepare(normalised, steps)
    assert torch.allclose(clean, pixels * 2 - 1, atol=1e-5)


def test_t_changes_the_feature_through_the_time_embedding(teacher_dir):
    t = teacher(teacher_dir)
    x = torch.randn(1, 3, 32, 32).expand(2, -1, -1, -1)
    with torch.no_grad():
        f = t(x, torch.tensor([0, 999]))
    assert not torch.allclose(f[0], f[1])


def test_wrong_layer_lists_valid_names(teacher_dir):
    with pytest.raises(UserError, match=r"mid_block\.resnets\.1\.conv2"):
        teacher(teacher_dir, layer="mid_block.resnet.1.conv2")


def test_pickle_only_folder_is_refused(teacher_dir, tmp_path):
    folder = tmp_path / "unet"
    folder.mkdir()
    shutil.copy(teacher_dir / "unet" / "config.json", folder)
    torch.save(load_unet(str(teacher_dir)).state_dict(), folder / "diffusion_pytorch_model.bin")
    with pytest.raises(UserError, match=r"only pickle weights \(diffusion_pytorch_model\.bin\).*safetensors"):
        load_unet(str(folder))


def test_missing_teacher_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(UserError, match=r"python train\.py experiment=ddpm_digits.*tasks\.chain repfusion_digits"):
        load_unet(str(tmp_path / "logs" / "ddpm_digits" / "export" / "unet"))
    with pytest.raises(UserError, match=r"No finished 'ddpm_digits' run.*experiment=ddpm_digits"):
        load_unet("latest:ddpm_digits", runs_dir=tmp_path)
    with pytest.raises(UserError, match=r"hub.*experiment=ddpm_digits"):
        load_unet("someone/no-such-teacher", offline=True)


def test_latest_finds_the_newest_finished_run(teacher_dir, tmp_path):
    for name, finished in (("2020-01-01_a", True), ("2020-01-02_b", True), ("2020-01-03_c", False)):
        run = tmp_path / "ddpm_digits" / "runs" / name
        shutil.copytree(teacher_dir, run / "export")
        if finished:
            (run / "summary.json").write_text("{}")
    newest = tmp_path / "ddpm_digits" / "runs" / "2020-01-02_b" / "export" / "unet"
    assert latest_export("ddpm_digits", tmp_path) == newest


def test_frozen_contract_when_attached(teacher_dir):
    owner = nn.Module()
    owner.student = nn.Linear(2, 2)
    frozen = attach_frozen(owner, "teacher", teacher(teacher_dir))
    owner.train()
    assert not frozen.training and not frozen.module.unet.training
    assert all(not p.requires_grad for p in frozen.parameters())
    assert set(owner.state_dict()) == {"student.weight", "student.bias"}
    owner.load_state_dict(owner.state_dict())  # the missing teacher is tolerated
    with torch.enable_grad():
        out = frozen(torch.randn(1, 3, 32, 32, requires_grad=True), torch.tensor([3]))
    assert not out.requires_grad and out.dtype == torch.float32


def test_bf16_channels_last_teacher_matches_float32(teacher_dir):
    t = teacher(teacher_dir, dtype="bfloat16", channels_last=True)
    assert t.unet.dtype == torch.bfloat16
    reference = teacher(teacher_dir)
    x, steps = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 500])
    with torch.no_grad():
        f, g = t(x, steps), reference(x, steps)
    assert f.dtype == torch.float32 and f.shape == g.shape
    relative = ((f - g).norm() / g.norm()).item()
    assert 1e-4 < relative < 0.03  # bf16 keeps ~3 significant digits (measured: 0.015); float32 differs by ~1e-7
    with pytest.raises(UserError, match="dtype"):
        teacher(teacher_dir, dtype="fp8")
