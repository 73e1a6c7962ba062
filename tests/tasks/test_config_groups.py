"""Every option of the model, model/distill_loss, model/optimizer, model/scheduler and data groups
of conf/ with its own defaults: it passes the typed check of `python train.py` (so a rule can never
refuse a shipped default), and, where no missing real file stops it, trains, validates and tests
one batch (debug=fast; a generated data set is made smaller for it). Each option is hosted by the
fewest other choices it needs (a model for a data set, data for a model, a test-made teacher or
DeRy spec); none of them sets a key of the option itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.config.check import check_command
from tests.conftest import CONF, compose_config, run_in_process
from tests.dery.conftest import stages, tiny_spec  # noqa: F401  (fixtures: a search spec on the tiny zoo)
from tests.kf.conftest import digits_teacher  # noqa: F401  (fixture: a tiny exported classifier)
from tests.repfusion.conftest import teacher_dir  # noqa: F401  (fixture: a small DDPM pipeline folder)

BARE = ["~experiment"]  # train.yaml's defaults without classify_digits' settings

# option -> (the choices that host it, the fixture it needs). {teacher}, {card} and {spec} are
# filled from the fixtures.
MODELS = {
    "classifier": ([], None),
    "ddpm": ([], None),
    "dery": (["model.spec={spec}"], "tiny_spec"),
    "kd": (["model.teacher.source={card}"], "digits_teacher"),
    "kf": (["model.teacher.source={card}"], "digits_teacher"),
    "kf_baseline": ([], None),
    "landmarks": (["data=shapes_landmarks", "model.num_keypoints=15"], None),
    "landmarks_hrnet": (["data=shapes_landmarks", "model.num_keypoints=15"], None),
    "repfusion": (["model.teacher.source={teacher}"], "teacher_dir"),
    "segmenter": (["data=digits_seg", "model.num_classes=11"], None),
    "segmenter_fcn": (["data=digits_seg", "model.num_classes=11"], None),
}
# AT and the dense loss compare spatial maps: the student's layer3 (2x2 at 32x32), as docs/repfusion.md says.
REPFUSION = ["model=repfusion", "model.teacher.source={teacher}", "model.feature_index=-2"]
SUBGROUPS = {
    "model/distill_loss": (REPFUSION, "teacher_dir"),
    "model/optimizer": ([], None),
    "model/scheduler": ([], None),
}
DATA = {
    "digits": ([], None),
    "fashion_mnist": ([], None),
    "cifar10": (["model.num_classes=10"], None),
    "cifar100": (["model.num_classes=100"], None),
    "tiny_imagenet": (["model.num_classes=200"], None),
    "imagefolder": (["data.root=/nonexistent/images"], None),
    "digits_seg": (["model=segmenter", "model.num_classes=11"], None),
    "celebamask": (["model=segmenter", "model.num_classes=18"], None),
    "shapes": (["model=kf_baseline", "model.factor_sizes=${data.factors}"], None),
    "shapes_landmarks": (["model=landmarks", "model.num_keypoints=15"], None),
    "wflw": (["model=landmarks"], None),
}
# The generated data sets are made whole at set-up; one batch needs few of them (the check above used the defaults).
RUN_SIZES = {
    "data=shapes": ["data.num_train=128", "data.num_val=64", "data.num_test=64"],
    "data=shapes_landmarks": ["data.train_size=64", "data.val_size=64", "data.test_size=64"],
}
NEEDS_REAL_FILES = {"cifar10", "cifar100", "tiny_imagenet", "imagefolder", "celebamask", "wflw"}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


CASES = [
    *[("model", o, *MODELS[o]) for o in _options("model")],
    *[(g, o, *SUBGROUPS[g]) for g in SUBGROUPS for o in _options(g)],
    *[("data", o, *DATA[o]) for o in _options("data")],
]


def test_every_option_of_the_groups_has_a_host():
    """A new option in conf/ must be added to the tables above (so it is tested too)."""
    assert sorted(MODELS) == _options("model") and sorted(DATA) == _options("data")
    assert all(_options(g) for g in SUBGROUPS)


def _overrides(request, group: str, option: str, host: list[str], fixture: str | None) -> list[str]:
    made = {}
    if fixture == "teacher_dir":
        made["teacher"] = request.getfixturevalue("teacher_dir")
    elif fixture == "digits_teacher":
        made["card"] = request.getfixturevalue("digits_teacher")
    elif fixture == "tiny_spec":
        made["spec"] = request.getfixturevalue("tiny_spec")
    filled = []
    for item in host:
        for name, value in made.items():
            item = item.replace(f"{{{name}}}", str(value))
        filled.append(item)
    return [*BARE, *filled, f"{group}={option}"]


@pytest.mark.parametrize("group,option,host,fixture", CASES, ids=[f"{c[0]}={c[1]}" for c in CASES])
def test_the_option_passes_the_check_with_its_own_defaults(group, option, host, fixture, request, tmp_path):
    cfg = compose_config(_overrides(request, group, option, host, fixture), tmp_path / "run")
    check_command(cfg, "train")


@pytest.mark.parametrize("group,option,host,fixture", CASES, ids=[f"{c[0]}={c[1]}" for c in CASES])
def test_the_option_runs_one_batch_with_its_own_defaults(group, option, host, fixture, request, tmp_path):
    if group == "data" and option in NEEDS_REAL_FILES:
        pytest.skip(f"data={option} reads a real data set (its loader's tests use a fixture in its layout)")
    if option == "fashion_mnist" and not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST is not installed here (make fashion)")
    overrides = [*_overrides(request, group, option, host, fixture), "debug=fast"]
    overrides += [size for choice, sizes in RUN_SIZES.items() if choice in overrides for size in sizes]
    summary = run_in_process(overrides, tmp_path / "run")
    assert summary["global_step"] >= 1 and summary["test"], summary
