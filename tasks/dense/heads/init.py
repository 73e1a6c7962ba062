"""Initialisation of the dense heads (and of backbones trained from scratch) as the original
recipes had it, next to PyTorch's defaults ("pytorch", what a module gets when built).

- "mmseg" (mmseg 0.30 BiSeNetV1 + FCN heads): every conv of a conv-BN-ReLU (ConvModule)
  Kaiming-normal (fan_out, relu); BN weight 1, bias 0; the decode head's classifier
  N(0, 0.01) with bias 0. The auxiliary heads' classifiers keep PyTorch's default, as in
  mmseg, whose EncoderDecoder keeps them in a plain nn.ModuleList that init_weights skips.
- "mmpose" (TopdownHeatmapSimpleHead.init_weights): every conv and deconv N(0, 0.001),
  bias 0; BN weight 1, bias 0. Its HRNet backbone, from scratch, has every conv
  N(0, 0.001) and BN 1/0; its ResNet is Kaiming-normal (fan_out) with the last BN of every
  residual block at 0, which is what timm's ResNet already does."""

from __future__ import annotations

import torch.nn as nn

from tasks.errors import UserError

HEAD_INITS = ("pytorch", "mmseg", "mmpose")


def _batchnorm(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _normal(module: nn.Module, std: float) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_mmseg(head: nn.Module) -> None:
    """mmseg's initialisation of a BiSeNetV1Head or FCNHead (see the module docstring)."""
    aux = getattr(head, "aux", None)
    aux_classifiers = {id(block.classifier) for block in aux} if aux is not None else set()
    for m in head.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in aux_classifiers:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    _batchnorm(head)
    decode = head.decode if hasattr(head, "decode") else getattr(head, "block", None)
    if decode is not None:
        _normal(decode.classifier, 0.01)


def init_mmpose(head: nn.Module) -> None:
    """mmpose's initialisation of a HeatmapHead."""
    _normal(head, 0.001)
    _batchnorm(head)


def init_mmpose_backbone(backbone: nn.Module) -> None:
    """mmpose's from-scratch initialisation where it differs from timm's (HRNet)."""
    if "HighResolution" in type(backbone).__name__:
        _normal(backbone, 0.001)
        _batchnorm(backbone)


def initialize_head(head: nn.Module, scheme: str) -> None:
    if scheme not in HEAD_INITS:
        raise UserError(f"Unknown head initialisation '{scheme}'. Choose one of {list(HEAD_INITS)}.")
    if scheme == "mmseg":
        init_mmseg(head)
    elif scheme == "mmpose":
        init_mmpose(head)
