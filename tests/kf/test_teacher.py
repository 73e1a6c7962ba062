"""Loading the KF teacher from an export card, a checkpoint (with key prefix) or a timm
name, and reading its stages and logits in eval or (original) train-mode BatchNorm."""

from __future__ import annotations

import pytest
import torch

from kf.teacher import TeacherReader, TeacherSpec, load_teacher, stage_names
from tasks.distill.frozen import attach_frozen
from tasks.errors import UserError
from tasks.models.backbones import create_backbone

DIGITS = {"label": 10}


def test_export_card_and_checkpoint_with_prefix_load_the_same_weights(digits_teacher, tmp_path):
    from_card, specs = load_teacher(TeacherSpec(source=digits_teacher), DIGITS)
    assert specs[0].factor == "label" and specs[0].num_classes == 10
    state = {f"net.{k}": v for k, v in from_card.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "run.ckpt")
    spec = TeacherSpec(source=str(tmp_path / "run.ckpt"), arch="resnet10t", prefix="net.")
    with pytest.raises(
        UserError, match="do not fit the backbone"
    ):  # the checkpoint's channels are not resnet10t's defaults
        load_teacher(spec, DIGITS)
    spec.timm_kwargs = {"channels": [8, 16, 32, 64], "stem_width": 8}
    from_ckpt, _ = load_teacher(spec, DIGITS)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(from_ckpt.eval()(x), from_card.eval()(x))


def test_checkpoint_teacher_with_default_architecture(tmp_path):
    torch.manual_seed(0)
    net = create_backbone("resnet10t", num_classes=10)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "best.ckpt")
    loaded, _ = load_teacher(TeacherSpec(source=str(tmp_path / "best.ckpt"), arch="resnet10t", prefix="net."), DIGITS)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.eval()(x), net.eval()(x))


def test_teacher_errors_name_the_fix(tmp_path):
    with pytest.raises(UserError, match="teacher.source is not set.*classify_digits"):
        load_teacher(TeacherSpec(), DIGITS)
    with pytest.raises(UserError, match="does not exist.*tasks.chain kf_digits"):
        load_teacher(TeacherSpec(source=str(tmp_path / "nope" / "model.json")), DIGITS)
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(UserError, match="needs its architecture"):
        load_teacher(TeacherSpec(source=str(tmp_path / "w.ckpt")), DIGITS)
    with pytest.raises(UserError, match=r"unknown keys \['sorce'\]"):
        TeacherSpec.parse({"sorce": "x"})
    with pytest.raises(UserError, match="bn_mode"):
        TeacherSpec.parse({"bn_mode": "frozen"})


def test_class_count_mismatch_is_refused(digits_teacher):
    with pytest.raises(UserError, match="predicts 10 classes but factor 'label' has 5"):
        load_teacher(TeacherSpec(source=digits_teacher), {"label": 5})


def test_reader_pools_stages_and_keeps_eval_mode(digits_teacher):
    owner = torch.nn.Module()
    net, _ = load_teacher(TeacherSpec(source=digits_teacher), DIGITS)
    frozen = attach_frozen(owner, "teacher", net)
    reader = TeacherReader(frozen, [-2, -1])
    assert reader.names == ["layer3", "layer4"]
    x = torch.randn(4, 3, 32, 32)
    stages, logits = reader(x)
    assert [s.shape for s in stages] == [(4, 32), (4, 64)] and logits[0].shape == (4, 10)
    assert torch.equal(logits[0], net(x)) and not net.training
    with pytest.raises(UserError, match="out of range"):
        stage_names(net, [7])


def test_train_mode_batchnorm_is_the_original_option(digits_teacher):
    owner = torch.nn.Module()
    net, _ = load_teacher(TeacherSpec(source=digits_teacher), DIGITS)
    frozen = attach_frozen(owner, "teacher", net)
    before = net.bn1.running_mean.clone()
    x = torch.randn(4, 3, 32, 32) * 3 + 1
    _, eval_logits = TeacherReader(frozen, [-1], "eval")(x)
    assert torch.equal(before, net.bn1.running_mean)
    _, batch_logits = TeacherReader(frozen, [-1], "train")(x)
    assert not torch.allclose(eval_logits[0], batch_logits[0])  # batch statistics, not the running ones
    assert not torch.equal(before, net.bn1.running_mean)  # and the running stats drift, as in the original
    assert not net.training  # back in eval mode afterwards
    assert not any(p.requires_grad for p in net.parameters())


def test_reader_survives_a_deep_copy_of_its_owner(digits_teacher):
    import copy

    owner = torch.nn.Module()
    net, _ = load_teacher(TeacherSpec(source=digits_teacher), DIGITS)
    owner.reader = TeacherReader(attach_frozen(owner, "teacher", net), [-1])
    twin = copy.deepcopy(owner)  # what weight-averaging callbacks do
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(twin.reader(x)[0][0], owner.reader(x)[0][0])
    assert twin.reader.teacher is twin.teacher and not net.layer4._forward_hooks
