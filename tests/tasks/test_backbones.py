"""timm students: export -> timm reload gives the same outputs, weight loading from
checkpoints with a prefix, the small-input stem, and the feature-API contract."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from tasks.distill.taps import FeatureTap, resolve_module, stage_features
from tasks.errors import UserError
from tasks.models.backbones import create_backbone, export_backbone, load_backbone_weights, load_exported


def _same_outputs(a, b, x):
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_export_then_plain_timm_create_model_gives_same_outputs(tmp_path):
    torch.manual_seed(0)
    model = create_backbone("resnet18", num_classes=10)
    paths = export_backbone(model, tmp_path)
    card = json.loads(open(paths["card"]).read())
    reloaded = timm.create_model(
        card["timm_name"],
        pretrained=True,
        num_classes=10,
        pretrained_cfg_overlay=dict(file=paths["weights"], num_classes=10),
    )
    assert _same_outputs(model, reloaded, torch.randn(2, 3, 32, 32))


def test_small_stem_export_reloads_through_timm_registry(tmp_path):
    torch.manual_seed(0)
    model = create_backbone("resnet18", num_classes=0, small_input_stem=True)
    assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, torch.nn.Identity)
    assert model.feature_info[-1]["reduction"] == 8
    paths = export_backbone(model, tmp_path, name="backbone")
    assert _same_outputs(model, load_exported(paths["card"]), torch.randn(2, 3, 32, 32))
    reloaded = timm.create_model(
        "resnet18_smallstem",
        pretrained=True,
        num_classes=0,
        pretrained_cfg_overlay=dict(file=paths["weights"], num_classes=0),
    )
    assert _same_outputs(model, reloaded, torch.randn(2, 3, 32, 32))


def test_init_from_checkpoint_with_prefix_and_new_head(tmp_path):
    torch.manual_seed(0)
    source = create_backbone("resnet18", num_classes=0)
    ckpt = {"state_dict": {f"student.backbone.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}
    torch.save(ckpt, tmp_path / "stage1.ckpt")
    target = create_backbone(
        "resnet18", num_classes=7, init=str(tmp_path / "stage1.ckpt"), init_prefix="student.backbone."
    )
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert target.fc.out_features == 7


def test_weights_that_do_not_fit_are_refused(tmp_path):
    export_backbone(create_backbone("resnet18", num_classes=0), tmp_path)
    with pytest.raises(UserError, match="do not (fit|match)"):
        load_backbone_weights(create_backbone("resnet34", num_classes=0), tmp_path / "model.safetensors")
    with pytest.raises(UserError, match="prefix 'nope.'"):
        load_backbone_weights(create_backbone("resnet18"), tmp_path / "model.safetensors", prefix="nope.")


def test_unknown_timm_name_is_a_clear_error():
    with pytest.raises(UserError, match="Unknown timm model 'resnet181'"):
        create_backbone("resnet181")
    with pytest.raises(UserError, match="patch embedding"):
        create_backbone("vit_tiny_patch16_224", small_input_stem=True)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("resnet18", {}),
        ("mobilenetv2_050", {}),
        ("convnext_atto", {}),
        ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}),
    ],
)
def test_stage_features_follow_feature_info(name, kwargs):
    """timm's contract: channels equal feature_info, spatial size <= ceil(input/reduction)+1."""
    model = create_backbone(name, **kwargs).eval()
    feats = stage_features(model, torch.randn(2, 3, 32, 32), list(range(len(model.feature_info))))
    for feat, info in zip(feats, model.feature_info):
        assert feat.shape[1] == info["num_chs"]
        assert feat.shape[-1] <= -(-32 // info["reduction"]) + 1


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_050", "convnext_atto", "regnetx_002"])
def test_stop_early_features_equal_the_full_forward_and_skip_the_last_stage(name):
    model = create_backbone(name).eval()
    x = torch.randn(2, 3, 32, 32)
    last = model.feature_info[-1]["module"]
    ran = []
    handle = resolve_module(model, last).register_forward_hook(lambda *_: ran.append(last))
    with torch.no_grad():
        early = stage_features(model, x, -2)
        assert ran == []  # the last stage never ran
        full = stage_features(model, x, -2, stop_early=False)
        assert ran == [last]
    handle.remove()
    assert torch.equal(early[0], full[0])


def test_truncated_tap_equals_full_forward_at_the_tapped_layer():
    model = create_backbone("resnet18").eval()
    x = torch.randn(2, 3, 32, 32)
    full = FeatureTap(model, ["layer2.1"])
    expected = full(lambda: model(x))["layer2.1"]
    full.remove()
    seen = []
    handle = model.layer4.register_forward_hook(lambda *a: seen.append(1))
    early = FeatureTap(model, ["layer2.1"], stop_early=True)
    got = early(lambda: model(x))["layer2.1"]
    assert torch.equal(got, expected)
    assert not seen, "layers after the tap must not run"
    handle.remove()


def test_wrong_layer_name_lists_valid_names():
    model = create_backbone("resnet18")
    with pytest.raises(UserError, match=r"layer4\.1"):
        resolve_module(model, "layer4.7")
