"""Classic KD (kd/module.py): the loss by hand, the teacher read from an export with its own
normalisation, and a tiny end-to-end run from a trained digits teacher."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from safetensors.torch import load_file

from kd.module import KDModule, hinton_loss
from tasks.errors import UserError
from tasks.models.backbones import create_backbone, export_timm
from tests.conftest import run_in_process

TINY_NET = {"name": "resnet10t", "channels": [8, 16, 32, 64], "stem_width": 8}
TEACHER_DATA = {"mean": [0.25, 0.5, 0.75], "std": [0.5, 0.25, 0.125], "input_size": [3, 32, 32]}


def test_hinton_loss_by_hand():
    s, t, y = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0])
    # T = 1: KL([3/4, 1/4] || [1/2, 1/2]) = 3/4 ln 3/2 + 1/4 ln 1/2 = 0.1308120; CE = ln 2.
    total, soft, hard = hinton_loss(s, t, y, temperature=1.0, alpha=0.5)
    assert soft.item() == pytest.approx(0.13081203594113713, abs=1e-6)
    assert hard.item() == pytest.approx(math.log(2.0), abs=1e-6)
    assert total.item() == pytest.approx(0.5 * 0.13081203594113713 + 0.5 * math.log(2.0), abs=1e-6)
    # T = 2: p = (sqrt 3, 1) / (sqrt 3 + 1); 4 * KL(p || uniform) = 0.1453631; alpha = 1 keeps only the KD term.
    total, _, _ = hinton_loss(s, t, y, temperature=2.0, alpha=1.0)
    assert total.item() == pytest.approx(0.145363131481894, abs=1e-6)
    # logits equal up to a shift agree at every T (KD = 0); alpha = 0 is the cross-entropy: -log softmax(1, -1)[1].
    total, soft, _ = hinton_loss(torch.tensor([[1.0, -1.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([1]), 3.0, 0.0)
    assert soft.item() == pytest.approx(0.0, abs=1e-6)
    assert total.item() == pytest.approx(2.1269280110429722, abs=1e-6)


def _module(source: str, num_classes: int = 10) -> KDModule:
    return KDModule(
        backbone=TINY_NET,
        num_classes=num_classes,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        teacher={"source": source},
    )


def test_the_teacher_sees_the_normalisation_of_its_export(tmp_path):
    torch.manual_seed(0)
    teacher = create_backbone("resnet10t", num_classes=10, channels=[8, 16, 32, 64], stem_width=8).eval()
    export_timm(teacher, tmp_path / "export", data=TEACHER_DATA)
    module = _module(str(tmp_path / "export"))
    student_mean, student_std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    module.set_input_normalization(student_mean, student_std)
    # scale = std_s / std_t, shift = (mean_s - mean_t) / std_t, per channel
    assert module.teacher_scale.flatten().tolist() == [0.5, 1.0, 2.0]
    assert module.teacher_shift.flatten().tolist() == [0.5, 0.0, -2.0]
    raw = torch.rand(2, 3, 32, 32)
    as_student = (raw - torch.tensor(student_mean).view(1, 3, 1, 1)) / torch.tensor(student_std).view(1, 3, 1, 1)
    as_teacher = (raw - torch.tensor(TEACHER_DATA["mean"]).view(1, 3, 1, 1)) / torch.tensor(TEACHER_DATA["std"]).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(module.teacher_logits(as_student), teacher(as_teacher), rtol=1e-4, atol=1e-5)
    # the frozen-teacher contract: no grad, eval mode whatever the owner does, not in the checkpoint
    module.train()
    assert not module.teacher.training and not any(p.requires_grad for p in module.teacher.parameters())
    assert not any(k.startswith("teacher.") for k in module.state_dict())
    with pytest.raises(UserError, match="predicts 10 classes, but 5 are needed"):
        _module(str(tmp_path / "export"), num_classes=5)


@pytest.mark.slow
def test_kd_digits_runs_from_a_trained_teacher(tmp_path, tiny):
    teacher = run_in_process(
        ["experiment=classify_digits", "model.backbone.name=resnet10t", *tiny], tmp_path / "teacher"
    )
    summary = run_in_process(
        ["experiment=kd_digits", f"model.teacher.source=run:{tmp_path / 'teacher'}", *tiny], tmp_path / "kd"
    )
    # the same first test batch through the same DataModule: the teacher inside KD scores what its own run scored
    assert summary["test"]["test/teacher_acc"] == teacher["test"]["test/acc"]
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0 and summary["task_name"] == "kd_digits"
    ckpt = torch.load(summary["checkpoints"]["last"], weights_only=True)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    exported = load_file(str(tmp_path / "kd" / "export" / "model.safetensors"))
    assert exported.keys() == create_backbone("resnet18", num_classes=10).state_dict().keys()
