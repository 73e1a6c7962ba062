"""Stage 1 end to end (in-process, tiny): what it logs, plots, saves and exports; that
labels never reach the student; the EMA; precision and optimiser options; stage 2 from
its export."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from repfusion.knn import knn_accuracy
from tasks.data import load_digit_images
from tasks.distill.taps import stage_features
from tasks.errors import UserError
from tasks.io.checkpoints import load_checkpoint
from tasks.models.backbones import create_backbone
from tasks.run.instantiate import build
from tasks.training.ema import ModelEMA
from tests.conftest import TINY, compose_config, run_in_process
from tests.repfusion.conftest import stage1_overrides


@pytest.fixture(scope="module")
def stage1(teacher_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("stage1")
    summary = run_in_process(stage1_overrides(teacher_dir, "trainer.max_epochs=2"), run_dir)
    return run_dir, summary


def build_module(teacher_dir, tmp_path, *extra):
    cfg = compose_config(stage1_overrides(teacher_dir, *extra), tmp_path)
    return build("model", cfg.model)


def test_stage1_logs_plots_and_exports(stage1):
    run_dir, summary = stage1
    for key in ("test/knn_acc", "test/probe_acc", "test/loss_probe", "test/loss_feat", "test/t_mean"):
        assert key in summary["test"], key
    for key in (
        "train/loss_feat",
        "train/loss_probe",
        "train/loss_policy",
        "train/loss_entropy",
        "train/t_mean",
        "train/policy_entropy",
        "val/knn_acc",
        "val/loss_probe",
    ):
        assert key in summary["final"], key
    assert (run_dir / "plots" / "timestep_histogram.png").is_file()
    timesteps = json.loads((run_dir / "export" / "timesteps.json").read_text())
    assert timesteps["mode"] == "rl" and len(timesteps["per_epoch"]) == 2
    assert all(sum(row) == 3 * 16 for row in timesteps["per_epoch"])  # 3 batches of 16 per epoch


def test_test_knn_acc_is_the_exported_students_knn_on_the_test_batch(stage1, tmp_path):
    """Recomputed from the export: the EMA backbone's pooled last-stage features of the
    first 64 test images (limit_test_batches=1), leave-one-out k-NN with k = 10."""
    run_dir, summary = stage1
    datamodule = build("data", compose_config(["experiment=repfusion_digits"], tmp_path).data)
    datamodule.setup("test")
    x, y = next(iter(datamodule.test_dataloader()))
    x = datamodule.normalize(x[:64])
    backbone = create_backbone("test_resnet", init=str(run_dir / "export" / "backbone.safetensors")).eval()
    with torch.no_grad():
        features = stage_features(backbone, x, -1)[0].mean(dim=(2, 3))
    assert summary["test"]["test/knn_acc"] == pytest.approx(knn_accuracy(features, y[:64], 10), abs=1e-6)


def test_checkpoint_leaves_the_teacher_out(stage1, teacher_dir):
    run_dir, _ = stage1
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(ckpt_path)
    state = ckpt["state_dict"]
    assert not any(k.startswith("teacher.") for k in state)
    assert any(k.startswith("ema.model.") for k in state) and any(k.startswith("policy.net.") for k in state)
    assert len(ckpt["repfusion_t_histograms"]) == 2
    teacher_weights = load_file(str(teacher_dir / "unet" / "diffusion_pytorch_model.safetensors"))
    teacher_bytes = sum(t.numel() * t.element_size() for t in teacher_weights.values())
    saved_bytes = sum(t.numel() * t.element_size() for t in state.values())
    saved_bytes += sum(
        t.numel() * t.element_size()
        for opt in ckpt["optimizer_states"]
        for s in opt["state"].values()
        for t in s.values()
        if torch.is_tensor(t)
    )
    size = ckpt_path.stat().st_size
    assert saved_bytes <= size < saved_bytes + 500_000 < saved_bytes + teacher_bytes


def test_export_initialises_stage2_classifier(stage1, tmp_path):
    run_dir, _ = stage1
    export = run_dir / "export" / "backbone.safetensors"
    summary = run_in_process(
        [
            "experiment=repfusion_digits_finetune",
            "model.backbone.name=test_resnet",
            f"model.backbone.init={export}",
            "data.batch_size=16",
            *TINY,
        ],
        tmp_path,
    )
    assert "test/acc" in summary["test"]
    ema_weights = load_file(str(export))
    module = build(
        "model",
        compose_config(
            [
                "experiment=repfusion_digits_finetune",
                "model.backbone.name=test_resnet",
                f"model.backbone.init={export}",
            ],
            tmp_path / "x",
        ).model,
    )
    own = module.net.state_dict()
    assert all(torch.equal(own[k], v) for k, v in ema_weights.items())


def test_labels_reach_only_the_probe(teacher_dir, tmp_path):
    module = build_module(teacher_dir, tmp_path)
    module.teacher.module.pixels.set([0.3] * 3, [0.3] * 3)
    x = torch.randn(8, 3, 32, 32)
    grads = []
    for labels in (torch.arange(8) % 10, (torch.arange(8) * 7 + 3) % 10):
        module.zero_grad()
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        draw = module.policy.draw(x, generator)
        f_t = module.teacher(x, draw.t, generator)
        terms = module.policy.losses(draw, f_t, labels, module.probe_feature(x, labels, generator))
        loss = module.distill_loss(module.student_feature(x), f_t)
        loss = loss + sum(v for k, v in terms.items() if k.startswith("loss"))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in module.student.named_parameters() if p.grad is not None})
        first_linear = next(m for m in module.policy.probe if isinstance(m, torch.nn.Linear))
        probe_grad = first_linear.weight.grad.clone()
        grads[-1]["_probe"] = probe_grad
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    assert all(torch.equal(grads[0][k], grads[1][k]) for k in grads[0] if k != "_probe")
    assert not torch.equal(grads[0]["_probe"], grads[1]["_probe"])


def test_stages_after_the_tap_are_frozen_and_spatial_losses_need_a_map(teacher_dir, tmp_path):
    module = build_module(teacher_dir, tmp_path, "model.feature_index=-2")
    assert not any(p.requires_grad for p in module.student.layer4.parameters())
    assert all(p.requires_grad for p in module.student.layer3.parameters())
    assert module.distill_loss.adapter.in_channels == module.student.feature_info[-2]["num_chs"]
    with pytest.raises(UserError, match=r"1x1.*feature_index=-2"):
        build_module(teacher_dir, tmp_path, "model/distill_loss=at")
    assert build_module(teacher_dir, tmp_path, "model/distill_loss=at", "model.feature_index=-2") is not None


def test_student_ema_follows_the_formula():
    model = torch.nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.9, warmup=False)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.model.weight, 0.9 * start + 0.1 * model.weight)
    warm = ModelEMA(model, decay=0.999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert not ema.model.weight.requires_grad and not ema.train().training


@pytest.mark.parametrize(
    "extra,optimizers",
    [
        (["trainer.precision=bf16-mixed"], 2),
        (
            [
                "model.policy_optimizer=null",
                "model.timesteps.baseline=none",
                "model.timesteps.probe_norm=batch",
                "model.timesteps.input_range=normalized",
                "model.timesteps.entropy_schedule=epochs",
            ],
            1,
        ),  # the first version
        (["model.timesteps.mode=uniform", "model/distill_loss=rkd", "model.teacher.noise=true"], 2),
    ],
)
def test_stage1_variants_run(teacher_dir, tmp_path, extra, optimizers):
    summary = run_in_process(stage1_overrides(teacher_dir, *extra), tmp_path)
    assert summary["global_step"] == 3 * optimizers and "test/knn_acc" in summary["test"]  # one step per optimiser
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert len(ckpt["optimizer_states"]) == optimizers


@pytest.mark.slow
def test_resumed_stage1_matches_an_uninterrupted_one(teacher_dir, tmp_path):
    common = stage1_overrides(
        teacher_dir,
        "trainer.deterministic=true",
        "export=false",
        "test=false",
        "model.timesteps.baseline=mean",
        "model.timesteps.entropy_end_epoch=2",
    )
    straight = run_in_process(common + ["trainer.max_epochs=2"], tmp_path / "straight")
    run_in_process(common + ["trainer.max_epochs=1"], tmp_path / "split")
    resumed = run_in_process(common + ["trainer.max_epochs=2", f"resume={tmp_path / 'split'}"], tmp_path / "split")
    # 6 batches, two optimisers (student; policy and probe)
    assert resumed["global_step"] == straight["global_step"] == 12
    for key in ("train/loss", "train/loss_policy", "train/t_mean", "val/knn_acc", "val/loss_feat"):
        assert resumed["final"][key] == straight["final"][key], key
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.ckpt") for d in ("straight", "split"))
    assert a["repfusion_t_histograms"] == b["repfusion_t_histograms"]
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items() if k.startswith("ema."))


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment,stem,metric",
    [("repfusion_seg_digits", False, "test/miou"), ("repfusion_landmarks_shapes", False, "test/nme")],
)
def test_export_initialises_dense_stage2(teacher_dir, tmp_path, experiment, stem, metric):
    overrides = stage1_overrides(
        teacher_dir,
        "model.student.name=resnet18",
        f"model.student.small_input_stem={stem}",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "test=false",
    )
    stage1 = run_in_process(overrides, tmp_path / "stage1")
    export = stage1["export"]["backbone"]
    stage2 = [f"experiment={experiment}", f"model.backbone.init={export}"]
    summary = run_in_process([*stage2, "data.batch_size=8", *TINY], tmp_path / "stage2")
    assert metric in summary["test"]
    module = build("model", compose_config(stage2, tmp_path / "x").model)
    weights = load_file(export)
    backbone = next(m for m in module.modules() if getattr(m, "kt_spec", None))
    own = backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in weights.items() if k in own) and len(set(weights) & set(own)) > 50


@pytest.fixture(scope="module")
def unlabeled_folder(tmp_path_factory):
    """60 digit scans as PNG files in three sub-folders that are not classes: no labels anywhere."""
    folder = tmp_path_factory.mktemp("unlabeled")
    images, _ = load_digit_images(32)
    for i, image in enumerate(images[:60]):
        (folder / f"part{i % 3}").mkdir(exist_ok=True)
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(pixels).save(folder / f"part{i % 3}" / f"{i}.png")
    return folder


def test_unlabeled_folder_yields_images_only(unlabeled_folder, tmp_path):
    config = compose_config(["experiment=repfusion_labelfree", f"data.root={unlabeled_folder}"], tmp_path)
    data = build("data", config.data)
    data.setup("fit")
    assert len(data.train_set) == 57 and len(data.val_set) == 3  # 5 % held out
    item = data.train_set[0]
    assert isinstance(item, tuple) and len(item) == 1 and item[0].shape == (3, 32, 32)
    with pytest.raises(UserError, match="data.root"):
        build(
            "data", compose_config(["experiment=repfusion_labelfree", f"data.root={tmp_path / 'none'}"], tmp_path).data
        )


def test_label_free_stage1_runs_without_labels_and_feeds_dense_stage2(teacher_dir, unlabeled_folder, tmp_path):
    summary = run_in_process(
        [
            "experiment=repfusion_labelfree",
            f"data.root={unlabeled_folder}",
            f"model.teacher.source={teacher_dir}",
            "data.batch_size=16",
            "trainer.max_epochs=1",
            "trainer.num_sanity_val_steps=0",
            "logger=csv",
            "trainer.enable_model_summary=false",
        ],
        tmp_path / "stage1",
    )
    assert summary["global_step"] == 3  # 57 images, batches of 16, the last one dropped
    assert "test/loss_feat" in summary["test"] and not any("knn" in k or "probe" in k for k in summary["test"])
    assert not any("probe" in k or "loss_policy" in k for k in summary["final"])
    card = json.loads((tmp_path / "stage1" / "export" / "backbone.json").read_text())
    assert card["labels_used"] is False and card["timestep_mode"] == "fixed"
    export = summary["export"]["backbone"]
    from tasks.io.cards import load_card

    student = load_card(tmp_path / "stage1" / "export").state_dict()  # the timm kind reads its backbone.json
    assert student.keys() == load_file(export).keys()
    assert all(torch.equal(student[k], v) for k, v in load_file(export).items())
    config = compose_config(["experiment=repfusion_seg_digits", f"model.backbone.init={export}"], tmp_path / "x")
    module = build("model", config.model)
    weights = load_file(export)
    backbone = next(m for m in module.modules() if getattr(m, "kt_spec", None))
    own = backbone.state_dict()
    assert len(set(weights) & set(own)) > 50 and all(torch.equal(own[k], v) for k, v in weights.items() if k in own)


def test_few_label_recipe_keeps_five_images_per_class(tmp_path):
    data = build("data", compose_config(["experiment=repfusion_digits_fewlabel"], tmp_path).data)
    full = build("data", compose_config(["experiment=repfusion_digits_finetune"], tmp_path).data)
    data.setup("fit"), full.setup("fit")
    labels = data.train_set.tensors[1]
    assert torch.bincount(labels).tolist() == [5] * 10
    assert torch.equal(data.val_set.tensors[0], full.val_set.tensors[0])
    assert torch.equal(data.test_set.tensors[0], full.test_set.tensors[0])
    kept = {tuple(x.flatten()[::37].tolist()) for x in data.train_set.tensors[0]}
    assert kept <= {tuple(x.flatten()[::37].tolist()) for x in full.train_set.tensors[0]}  # a subset of the train split


def test_label_free_stage1_needs_no_policy_optimiser(teacher_dir, tmp_path):
    """The digits recipe names an optimiser for policy and probe; fixed t without a probe has
    neither, so the student's optimiser is the only one (an empty one used to stop the run)."""
    module = build_module(
        teacher_dir, tmp_path, "model.timesteps.mode=fixed", "model.timesteps.probe=false", "model.timesteps.fixed_t=5"
    )
    assert module.policy_optimizer_factory is None and module.automatic_optimization
    assert build_module(teacher_dir, tmp_path).policy_optimizer_factory is not None  # rl keeps its own


def test_few_label_stage1_distils_the_pool_and_rewards_only_the_labelled(teacher_dir, tmp_path):
    """One label per class, the rest of the pool masked: every pool image is distilled (3
    batches of 16 drawn t per epoch), the summary records the 10 labels."""
    summary = run_in_process(
        stage1_overrides(teacher_dir, "data.labels_per_class=1", "data.unlabelled=mask", "seed=3"), tmp_path
    )
    assert summary["labels_used"] == {"count": 10, "per_class": 1, "seed": 3, "pool": 1257, "unlabelled": "mask"}
    timesteps = json.loads((tmp_path / "export" / "timesteps.json").read_text())
    assert [sum(row) for row in timesteps["per_epoch"]] == [3 * 16]
