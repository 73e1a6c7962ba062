"""The original recipes' initialisation of the dense heads (tasks.dense.heads.init): weight spreads
against the distributions mmseg's ConvModule / decode head and mmpose's heatmap head draw."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from tasks.dense.heads import BiSeNetV1Head, HeatmapHead
from tasks.dense.landmarks import LandmarkModule
from tasks.dense.segmentation import SegmentationModule

SGD = functools.partial(torch.optim.SGD, lr=0.1)


def test_mmseg_initialisation_of_bisenet():
    torch.manual_seed(0)
    head = SegmentationModule({"name": "resnet18"}, functools.partial(BiSeNetV1Head), 18, SGD, head_init="mmseg").head
    conv = head.context.head16[0]  # a ConvModule: 3x3, 128 -> 128, Kaiming normal (fan_out, relu)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.03)
    assert head.decode.classifier.weight.std().item() == pytest.approx(0.01, rel=0.05)  # conv_seg: N(0, 0.01)
    assert head.decode.classifier.bias.abs().max().item() == 0
    # the auxiliary heads' conv_seg keep PyTorch's default (mmseg's ModuleList is skipped by init_weights)
    aux = head.aux[0].classifier
    assert aux.weight.std().item() == pytest.approx(1 / math.sqrt(64) / math.sqrt(3), rel=0.06)
    assert aux.bias.abs().max().item() > 0


def test_mmpose_initialisation_of_the_heatmap_head_and_a_scratch_hrnet():
    torch.manual_seed(0)
    resnet = LandmarkModule(
        {"name": "resnet18"}, functools.partial(HeatmapHead, deconv_channels=[64, 64]), 98, SGD, head_init="mmpose"
    )
    deconv, final = resnet.head.layers[0][0], resnet.head.final
    assert deconv.weight.std().item() == pytest.approx(0.001, rel=0.03)
    assert final.weight.std().item() == pytest.approx(0.001, rel=0.05) and final.bias.abs().max().item() == 0
    # timm's ResNet is already mmpose's: Kaiming normal (fan_out), last BN of each block at zero
    assert resnet.backbone.layer1[0].bn2.weight.abs().max().item() == 0
    hrnet = LandmarkModule(
        {"name": "hrnet_w18_small", "head": ""},
        functools.partial(HeatmapHead, in_indices=[1, 2, 3, 4], deconv_channels=[], extra_convs=1),
        98,
        SGD,
        head_init="mmpose",
    )
    assert hrnet.backbone.conv1.weight.std().item() == pytest.approx(0.001, rel=0.1)  # mmpose's HRNet: N(0, 0.001)
    default = LandmarkModule(
        {"name": "hrnet_w18_small", "head": ""},
        functools.partial(HeatmapHead, in_indices=[1, 2, 3, 4], deconv_channels=[], extra_convs=1),
        98,
        SGD,
    )
    assert default.backbone.conv1.weight.std().item() > 0.05 and default.head.final.weight.std().item() > 0.01
