"""KF and the multi-task baseline run end to end in-process (tiny limits): the test phase
reports per-task accuracy against the teacher, exact leakage, parameters, probes and (on
the shapes) MIG/DCI; the exported assembled network reproduces the checkpointed factors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from kf.assemble import load_assembled
from kf.disentanglement import dci, mig
from kf.factor import FactorNetwork
from kf.leakage_reference import main as leakage_reference
from kf.metrics import accuracy
from kf.shapes import FACTORS
from tasks.errors import UserError
from tasks.io.checkpoints import load_state_dict_file
from tasks.models.backbones import load_exported
from tests.conftest import TINY, compose_config, run_in_process
from tests.kf.conftest import TINY_NET, evaluate_export, load_test_split, shrink

KF_DIGITS = [
    "experiment=kf_digits",
    *shrink("ckn"),
    *shrink("tsn", ("name", "channels", "stem_width")),
    *TINY,
    "trainer.limit_test_batches=4",
    "+data.eval_batch_size=32",
]
SHAPES_DATA = [
    "data.num_train=128",
    "data.num_val=64",
    "data.num_test=160",
    "data.batch_size=32",
    "+data.eval_batch_size=80",
]


def test_kf_digits_tiny_run_reports_what_its_export_computes(confident_digits_teacher, tmp_path):
    digits_teacher = confident_digits_teacher
    overrides = [*KF_DIGITS, f"model.teacher.source={digits_teacher}"]
    summary = run_in_process(overrides, tmp_path / "run")
    test = summary["test"]
    # Recompute the report from the exported network and teacher on the same 4 x 32 test samples.
    x, y = load_test_split(overrides, tmp_path / "data", batches=4)
    mine = evaluate_export(summary["export"]["assembled"], x, y, ["label"], batch_size=32)
    logits, targets = mine["logits"], mine["targets"]
    margins = torch.stack([lg[:, 1] - lg[:, 0] for lg in logits], 1)
    assert test["test/acc"] == pytest.approx(float((margins.argmax(1) == y).float().mean()), abs=1e-6)
    assert test["test/subset_acc/n10"] == pytest.approx(test["test/acc"])  # all ten factors = the 10-class decode
    keep = y < 3
    first_three = float((margins[keep, :3].argmax(1) == y[keep]).float().mean())
    assert test["test/subset_acc/n3"] == pytest.approx(first_three, abs=1e-6)
    assert test["test/task_acc/class7"] == pytest.approx(accuracy_score(targets[:, 7], logits[7].argmax(1)), abs=1e-6)
    assert test["test/task_bacc/class7"] == pytest.approx(
        balanced_accuracy_score(targets[:, 7], logits[7].argmax(1)), abs=1e-6
    )
    with torch.no_grad():
        teacher = load_exported(digits_teacher).eval()(x)
    assert test["test/teacher_acc"] == pytest.approx(float((teacher.argmax(1) == y).float().mean()), abs=1e-6)
    # The class this teacher says most often: the one-vs-rest task where T = 1 and T = 10 targets disagree.
    c = int(teacher.argmax(1).mode().values)
    says_c = (torch.softmax(teacher, 1)[:, c] > 0.5).long()  # its probabilities summed into (rest, c)
    assert says_c.sum() > 0
    assert test[f"test/teacher_task_acc/class{c}"] == pytest.approx(
        float((says_c == targets[:, c]).float().mean()), abs=1e-6
    )
    assert test["test/acc_gap"] == pytest.approx(test["test/acc"] - test["test/teacher_acc"], abs=1e-6)
    gap = test["test/task_bacc"] - test["test/teacher_task_bacc"]
    assert test["test/task_bacc_gap"] == pytest.approx(gap, abs=1e-6)
    for key, value in mine["leakage"].items():
        assert test[key] == pytest.approx(value, abs=1e-6), key
    drop = [
        accuracy(lg, targets[:, k]) - accuracy(mine["net"].heads[k](mine["z"]), targets[:, k])
        for k, lg in enumerate(logits)
    ]
    assert test["test/drop_tsn/own_acc_loss"] == pytest.approx(float(np.mean(drop)), abs=1e-6)
    assert "test/leakage_offdiag_max" not in test  # replaced: it was 0 by construction
    assert test["test/params/assembled"] == test["test/params/ckn"] + 10 * test["test/params/tsn_mean"]
    assert test["test/params/separate"] == 10 * test["test/params/ckn"] + 10 * test["test/params/tsn_mean"]
    plots = {p.name for p in (tmp_path / "run" / "plots").iterdir()}
    assert {
        "task_accuracy.png",
        "cross_probe.png",
        "tsn_importance.png",
        "drop_tsn.png",
        "leakage.json",
        "assembled_subsets.png",
        "transfer_probe.png",
    } <= plots

    # The exported assembled network is exactly the tested checkpoint's factors.
    net = load_assembled(summary["export"]["assembled"])
    factors = FactorNetwork(TINY_NET, TINY_NET, [2] * 10)
    factors.load_state_dict(load_state_dict_file(summary["checkpoints"]["best"], prefix="factors."))
    factors.eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(out, factors.factor_logits(x, k)) for k, out in enumerate(net(x)))
    assert Path(summary["export"]["ckn_card"]).is_file()

    # The leakage reference re-reads the run: its trained codes give the run's numbers back.
    reference = leakage_reference([str(tmp_path / "run"), "--samples", "128"])
    for key, value in reference["trained"].items():
        assert test[f"test/{key}"] == pytest.approx(value, abs=1e-6), key
    assert reference["untrained"]["dci_tsn/own_share"] != pytest.approx(
        reference["trained"]["dci_tsn/own_share"], abs=1e-3
    )


def test_kf_without_teacher_says_how_to_make_one(tmp_path):
    cfg = compose_config(KF_DIGITS, tmp_path)
    from tasks.run.instantiate import build

    with pytest.raises(UserError, match="python -m tasks.chain kf_digits"):
        build("model", cfg.model)


def test_wrong_factor_sizes_are_caught_at_fit_start(digits_teacher, tmp_path):
    with pytest.raises(UserError, match=r"Set model.factor_sizes to \{'label': 10\}"):
        run_in_process(
            [
                *KF_DIGITS,
                f"model.teacher.source={digits_teacher}",
                "+model.factor_sizes.pen=2",
                "model.probe_tasks=null",
                "model.tasks=[{name: low, factor: label, groups: [[0,1,2,3,4],[5,6,7,8,9]]}]",
                "model.kd_weight=0",
            ],
            tmp_path,
        )


@pytest.mark.slow
def test_shapes_baseline_teaches_kf_and_both_report_disentanglement(tmp_path):
    base = run_in_process(
        [
            "experiment=kf_shapes_baseline",
            *SHAPES_DATA,
            *TINY,
            "trainer.limit_test_batches=2",
            *shrink("backbone", ("name", "channels", "stem_width")),
        ],
        tmp_path / "baseline",
    )
    for key in (
        "test/mig/shared",
        "test/dci_disentanglement/shared",
        "test/dci_completeness/shared",
        "test/dci_informativeness/shared",
        "test/probe/color/shared",
        "test/task_acc/rotation",
    ):
        assert key in base["test"], key
    overrides = [
        "experiment=kf_shapes",
        *SHAPES_DATA,
        *TINY,
        "trainer.limit_test_batches=2",
        *shrink("ckn", ("name", "channels", "stem_width")),
        *shrink("tsn", ("name", "channels", "stem_width")),
        f"model.teacher.source={base['export']['card']}",
    ]
    kf = run_in_process(overrides, tmp_path / "kf")
    test = kf["test"]
    # MIG, DCI and leakage recomputed from the exported network on the 160 test sprites.
    x, y = load_test_split(overrides, tmp_path / "data", batches=2)
    factors = list(FACTORS)
    mine = evaluate_export(kf["export"]["assembled"], x, y, factors, batch_size=80)
    used = y[:, [factors.index(f) for f in ("shape", "scale", "rotation", "x", "y")]].numpy()
    codes = {"ckn": mine["z"], "tsn": torch.cat(mine["h"], 1)}
    for rep, code in codes.items():
        code = code.numpy().astype(np.float64)
        assert test[f"test/mig/{rep}"] == pytest.approx(mig(code, used), abs=1e-6), rep
        disentanglement = dci(code, used)["disentanglement"]
        assert test[f"test/dci_disentanglement/{rep}"] == pytest.approx(disentanglement, abs=1e-6), rep
    for key, value in mine["leakage"].items():
        assert test[key] == pytest.approx(value, abs=1e-6), key
    assert test["test/task_acc/rotation"] == pytest.approx(accuracy(mine["logits"][2], mine["targets"][:, 2]), abs=1e-6)
    assert "test/teacher_task_acc/shape" in test and "test/probe/color/teacher" in test
    assert (tmp_path / "kf" / "plots" / "disentanglement.png").is_file()


def test_cifar10_recipe_builds_the_factor_networks_it_names(tmp_path):
    from tasks.models.backbones import create_backbone, export_backbone
    from tasks.run.instantiate import build

    teacher = export_backbone(
        create_backbone("resnet18", num_classes=10, small_input_stem=True), tmp_path, name="model"
    )["card"]
    cfg = compose_config(["experiment=kf_cifar10", f"model.teacher.source={teacher}"], tmp_path)
    assert (cfg.model.optimizer.lr, cfg.model.optimizer.weight_decay, list(cfg.model.scheduler.milestones)) == (
        0.1,
        1e-4,
        [100, 150],
    )
    assert (cfg.trainer.max_epochs, cfg.trainer.gradient_clip_val, cfg.model.temperature, cfg.model.kd_weight) == (
        200,
        35,
        10.0,
        0.1,
    )
    module = build("model", cfg.model)
    assert len(module.factors.tsns) == 10 and module.factors.dim == 512
    assert module.factors.tsns[0].backbone.kt_spec["timm_name"] == "mobilenetv2_050_smallstem"
    assert [p[0].in_features for p in module.projections] == [128, 256, 512]


def test_shapes_original_recipe_builds_the_original_dsprites_variant(tmp_path):
    from kf.multihead import MultiHeadNet
    from kf.task_spec import per_factor
    from tasks.run.instantiate import build

    specs = per_factor({k: v for k, v in FACTORS.items() if k != "color"})
    card = MultiHeadNet.create(TINY_NET, specs, feature_dim=10).export(tmp_path / "teacher")["card"]
    small = [*shrink("ckn", ("name", "channels", "stem_width")), *shrink("tsn", ("name", "channels", "stem_width"))]
    cfg = compose_config(["experiment=kf_shapes_original", f"model.teacher.source={card}", *small], tmp_path)
    schedule = (cfg.trainer.max_epochs, cfg.trainer.gradient_clip_val, list(cfg.model.scheduler.milestones))
    assert schedule == (20, None, [10, 15])
    module = build("model", cfg.model)
    assert module.factors.gaussian_tsn and module.factors.tsns[0].fc.out_features == 2 * 10
    assert (module.hparams.kd_loss, module.hparams.label_smoothing, module.hparams.kd_weight) == ("mse", 0.0, 0.1)
    optimizer = module.optimizer_factory
    assert optimizer.func is torch.optim.Adam
    assert (optimizer.keywords["lr"], optimizer.keywords["weight_decay"]) == (1e-4, 1e-4)
