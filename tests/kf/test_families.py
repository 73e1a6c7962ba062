"""Contract: every timm family the project uses (ResNet, MobileNetV2, MobileNetV3, EfficientNet,
ConvNeXt, RegNet, ViT) works as the CKN and as the TSNs of a factor network, with the TSNs
vectorised and looped: a Lightning training step, a validation epoch, and an assembled
network that gives the validated logits and survives a save/load round trip."""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from kf.assemble import assemble, load_assembled
from kf.module import KFModule

# Small members of each family (timm kwargs shrink the ones without a small variant).
FAMILIES = {
    "resnet": {"name": "resnet10t", "channels": [8, 16, 32, 64], "stem_width": 8},
    "mobilenetv2": {"name": "mobilenetv2_035"},
    "mobilenetv3": {"name": "mobilenetv3_small_050"},  # num_features 288, but a 1024-wide conv_head: the issue's crash
    "efficientnet": {"name": "efficientnet_b0"},
    "convnext": {"name": "convnext_atto", "depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128]},
    "regnet": {"name": "regnetx_002"},
    "vit": {"name": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "depth": 3},
}
TASKS = [
    {"name": "high", "groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]},
    {"name": "is3", "groups": [[0, 1, 2, 4, 5, 6, 7, 8, 9], [3]]},
    {"name": "mod3", "groups": [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]},
]


def loaders() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 3, 32, 32, generator=g), torch.arange(16) % 10)
    return DataLoader(data, batch_size=8, shuffle=True, generator=g), DataLoader(data, batch_size=8)


def factorize(teacher: dict, ckn: dict, tsn: dict, vectorize: bool, **extra) -> tuple[KFModule, pl.Trainer]:
    torch.manual_seed(0)
    module = KFModule(
        teacher=teacher,
        ckn=ckn,
        tsn=tsn,
        tasks=TASKS,
        vectorize=vectorize,
        optimizer=functools.partial(torch.optim.SGD, lr=0.01),
        **extra,
    )
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    train, val = loaders()
    trainer.fit(module, train, val)
    return module, trainer


def check_assembly(module: KFModule, trainer: pl.Trainer, tmp_path) -> None:
    assert trainer.global_step == 1 and "val/acc" in trainer.callback_metrics
    module.eval()
    x = torch.randn(3, 3, 32, 32)
    net = assemble(module.factors, module.specs)
    loaded = load_assembled(net.save(tmp_path)["assembled"])
    with torch.no_grad():
        validated = module.task_logits(x)  # the (vectorised) path validation ran
        for own, mine, reloaded in zip(validated, net(x), loaded(x)):
            assert own.shape == mine.shape and torch.allclose(own, mine, atol=1e-4, rtol=1e-4)
            assert torch.equal(mine, reloaded)


@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "loop"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_as_ckn_and_tsn(family, vectorize, digits_teacher, tmp_path):
    module, trainer = factorize({"source": digits_teacher}, FAMILIES[family], FAMILIES[family], vectorize)
    check_assembly(module, trainer, tmp_path)


def test_the_issue_combination_trains_validates_and_assembles(tmp_path):
    # python train.py experiment=kf_digits model.teacher.source=resnet34 model.teacher.pretrained=false
    #     model.ckn.name=efficientnet_b0 model.tsn.name=mobilenetv3_small_050  (crashed in validation)
    teacher = {"source": "resnet34", "pretrained": False}
    module, trainer = factorize(teacher, {"name": "efficientnet_b0"}, {"name": "mobilenetv3_small_050"}, True)
    assert module.factors.dim == 1280 and module.factors.tsns[0].fc.in_features == 1024
    check_assembly(module, trainer, tmp_path)
