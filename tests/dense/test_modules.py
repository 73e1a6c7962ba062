"""The segmentation and landmark modules: heads on several backbones, flip testing,
initialisation from exports and checkpoints, and tiny end-to-end runs."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from tasks.dense.heads import BiSeNetV1Head, FCNHead, HeatmapHead
from tasks.dense.landmarks import LandmarkModule
from tasks.dense.segmentation import SegmentationModule
from tasks.errors import UserError
from tasks.models.backbones import create_backbone, export_backbone
from tasks.models.classification import ClassificationModule
from tests.conftest import TINY, read_summary, run_in_process
from tests.dense.recompute import landmark_metrics, miou, predictions

SGD = functools.partial(torch.optim.SGD, lr=0.1)
SMALL = {"name": "resnet18", "small_input_stem": True}


def test_bisenet_outputs_and_aux_heads_only_in_training():
    module = SegmentationModule(SMALL, functools.partial(BiSeNetV1Head), 11, SGD)
    x = torch.randn(2, 3, 32, 32)
    outputs = module.head_forward(x)
    assert len(outputs) == 3 and outputs[0].shape == (2, 11, 16, 16)  # fused at the third-last stage (stride 2)
    module.eval()
    assert len(module.head_forward(x)) == 1
    assert module(x).shape == (2, 11, 32, 32)


def test_bisenet_on_a_standard_resnet_matches_mmseg_strides():
    module = SegmentationModule({"name": "resnet18"}, functools.partial(BiSeNetV1Head), 19, SGD).eval()
    spatial = module.head.spatial(torch.randn(1, 3, 64, 64))
    assert spatial.shape == (1, 128, 8, 8)  # stride 8, like mmseg's spatial path
    assert module(torch.randn(1, 3, 64, 64)).shape == (1, 19, 64, 64)


def test_fcn_head_and_its_stage_check():
    module = SegmentationModule(SMALL, functools.partial(FCNHead, in_indices=[-2, -1], head_channels=16), 5, SGD).eval()
    assert module(torch.randn(2, 3, 32, 32)).shape == (2, 5, 32, 32)
    with pytest.raises(UserError, match="last stage"):
        SegmentationModule(SMALL, functools.partial(FCNHead, in_indices=[2]), 5, SGD)


def test_heatmap_heads_on_resnet_and_hrnet():
    resnet = LandmarkModule({"name": "resnet18"}, functools.partial(HeatmapHead, deconv_channels=[32, 32, 32]), 15, SGD)
    assert resnet.head_forward(torch.randn(2, 3, 64, 64)).shape == (2, 15, 16, 16)  # stride 32 / 2^3 = 4
    hrnet = LandmarkModule(
        {"name": "hrnet_w18_small", "head": ""},
        functools.partial(HeatmapHead, in_indices=[1, 2, 3, 4], deconv_channels=[], extra_convs=1),
        98,
        SGD,
    )
    assert hrnet.head_forward(torch.randn(1, 3, 64, 64)).shape == (1, 98, 16, 16)  # HRNetV2: stride 4


def test_flip_test_is_mirror_equivariant():
    head = functools.partial(HeatmapHead, deconv_channels=[16, 16])
    module = LandmarkModule({"name": "resnet18"}, head, 3, SGD, flip_test=True).eval()
    module.flip_index = torch.tensor([2, 1, 0])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        direct, mirrored = module(x), module(x.flip(-1))
    # averaging with the mirrored pass makes the output exactly mirror-equivariant (the bias of the flip test
    # with mmpose's shift is in tests/dense/test_reference_maths.py)
    assert torch.allclose(mirrored, direct.flip(-1)[:, [2, 1, 0]], atol=1e-5)


def _same_weights(backbone: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    own = backbone.state_dict()
    keys = [k for k in reference if not k.startswith("fc.")]
    assert keys and all(torch.equal(own[k], reference[k]) for k in keys)


def test_segmenter_starts_from_a_classifier_export(tmp_path):
    classifier = ClassificationModule(SMALL, 10, SGD)
    paths = export_backbone(classifier.net, tmp_path, name="model")
    module = SegmentationModule({**SMALL, "init": paths["weights"]}, functools.partial(FCNHead), 11, SGD)
    _same_weights(module.backbone, classifier.net.state_dict())


def test_landmarks_start_from_a_stage1_checkpoint_with_prefix(tmp_path):
    student = create_backbone("resnet18", small_input_stem=True)
    state = {f"student.backbone.{k}": v for k, v in student.state_dict().items()}
    state["adapter.0.weight"] = torch.zeros(4, 512, 1, 1)
    torch.save({"state_dict": state}, tmp_path / "stage1.ckpt")
    module = LandmarkModule(
        {**SMALL, "init": str(tmp_path / "stage1.ckpt"), "init_prefix": "student.backbone."},
        functools.partial(HeatmapHead),
        15,
        SGD,
    )
    _same_weights(module.backbone, student.state_dict())
    with pytest.raises(UserError, match="prefix"):
        LandmarkModule(
            {**SMALL, "init": str(tmp_path / "stage1.ckpt"), "init_prefix": "teacher."},
            functools.partial(HeatmapHead),
            15,
            SGD,
        )


def test_seg_digits_runs_end_to_end_from_an_export(tmp_path):
    start = export_backbone(create_backbone("resnet18"), tmp_path / "stage1", name="student")
    run = tmp_path / "run"
    overrides = ["experiment=seg_digits", *TINY, "data.batch_size=16", f"model.backbone.init={start['weights']}"]
    summary = run_in_process(overrides, run)
    preds, batches = predictions(overrides, run, summary, limit=1)  # TINY tests one batch
    labels = [b[0] for b in batches]
    expected, per_class = miou(preds, labels, 11)
    assert summary["test"]["test/miou"] == pytest.approx(expected, abs=1e-6)
    assert summary["test"]["test/iou_background"] == pytest.approx(per_class[0], abs=1e-6)
    accuracy = sum(((p == t) & (t != 255)).sum() for p, t in zip(preds, labels)) / sum((t != 255).sum() for t in labels)
    assert summary["test"]["test/pixel_acc"] == pytest.approx(accuracy.item(), abs=1e-6)
    assert (run / "plots" / "val_masks.png").is_file() and (run / "plots" / "test_masks.png").is_file()
    card = json.loads((run / "export" / "backbone.json").read_text())
    assert card["timm_name"] == "resnet18"
    assert read_summary(run)["test"] == summary["test"]
    # the fine-tuned backbone feeds the next task
    LandmarkModule({"name": "resnet18", "init": summary["export"]["weights"]}, functools.partial(HeatmapHead), 15, SGD)


def test_landmarks_shapes_runs_end_to_end_from_an_export(tmp_path):
    student = create_backbone("resnet18")
    start = export_backbone(student, tmp_path / "stage1", name="student")
    run = tmp_path / "run"
    sizes = ["data.train_size=64", "data.val_size=16", "data.test_size=16", "data.batch_size=16"]
    overrides = ["experiment=landmarks_shapes", *TINY, *sizes, f"model.backbone.init={start['weights']}"]
    summary = run_in_process(overrides, run)
    preds, batches = predictions(overrides, run, summary, limit=1)
    points, visible = batches[0][0].numpy(), batches[0][1].numpy()
    expected = landmark_metrics(preds[0].numpy(), points, visible, (8, 11))
    assert summary["test"]["test/nme"] == pytest.approx(expected["nme"], abs=1e-5)
    assert summary["test"]["test/fr_10"] == pytest.approx(expected["fr_10"], abs=1e-6)
    assert summary["test"]["test/auc_10"] == pytest.approx(expected["auc_10"], abs=2e-4)
    assert (run / "plots" / "val_keypoints.png").is_file() and (run / "plots" / "test_keypoints.png").is_file()


def test_keypoint_count_mismatch_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="num_keypoints=98"):
        run_in_process(
            [
                "experiment=landmarks_shapes",
                *TINY,
                "model.num_keypoints=98",
                "data.train_size=16",
                "data.val_size=8",
                "data.test_size=8",
            ],
            tmp_path / "run",
        )
