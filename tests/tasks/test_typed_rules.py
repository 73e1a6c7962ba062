"""Ranges and choices sit beside the declarations they constrain: no rule by parameter name,
explicit rules for library signatures that hold for their subclasses, and every choice list of
a shipped config's targets read from a module constant."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tasks.config import schema
from tasks.config.check import check_command, check_node
from tasks.config.types import Choices
from tasks.errors import UserError
from tests.conftest import ROOT, compose_config


def _message(overrides: list[str], tmp_path: Path) -> str:
    with pytest.raises(UserError) as err:
        check_command(compose_config(overrides, tmp_path / "run"), "train")
    return str(err.value)


def toy(decay: float = 0.5, momentum: float = 0.9, val_fraction: float = 0.1, temperature: float = 1.0, p: float = 0):
    """Parameters that a name-based rule used to limit (decay, momentum, *_fraction to [0, 1])."""


def test_no_range_comes_from_a_parameter_name():
    target = f"{__name__}.toy"
    check_node("toy", {"decay": 5.0, "momentum": 3.0, "val_fraction": 2.0, "temperature": -1.0, "p": 7}, target)


def test_the_at_loss_default_passes_and_its_exponent_must_be_positive(tmp_path):
    base = ["experiment=repfusion_digits", "model/distill_loss=at", "model.feature_index=-2"]
    check_command(compose_config(base, tmp_path / "run"), "train")  # p = 2 (was refused: "in [0, 1]")
    assert "model.distill_loss.p=0.0 is out of range: ATLoss(p) expects a value > 0" in _message(
        [*base, "model.distill_loss.p=0.0"], tmp_path
    )


def test_a_zero_temperature_is_refused(tmp_path):
    message = _message(["experiment=kf_digits", "model.temperature=0"], tmp_path)
    expected = "Config value model.temperature=0 is out of range: KFModule(temperature) expects a value > 0"
    assert message.startswith(expected)


class MyCheckpoint(__import__("pytorch_lightning").callbacks.ModelCheckpoint):
    """A user's subclass of Lightning's callback."""


@pytest.mark.parametrize(
    "target,node,expected",
    [
        ("torch.optim.RMSprop", {"lr": -1.0}, "opt.lr=-1.0 is out of range: RMSprop(lr) expects a value > 0"),
        ("torch.optim.Adagrad", {"weight_decay": -1}, "Adagrad(weight_decay) expects a value >= 0"),
        ("torch.optim.SGD", {"momentum": 1.5}, "SGD(momentum) expects a value in [0, 1]"),
        (f"{__name__}.MyCheckpoint", {"mode": "maximum"}, "ModelCheckpoint(mode) expects one of ['min', 'max']"),
        (f"{__name__}.MyCheckpoint", {"save_top_k": -2}, "ModelCheckpoint(save_top_k) expects a value >= -1"),
    ],
)
def test_a_library_rule_holds_for_every_subclass(target, node, expected):
    with pytest.raises(UserError) as err:
        check_node("opt", node, target)
    assert expected in str(err.value)


def test_the_optimiser_rules_pass_a_shipped_optimiser():
    check_node("opt", {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True}, "torch.optim.SGD")


def test_a_dict_handed_on_as_keywords_is_checked_against_its_callable(tmp_path):
    # the segmenter's backbone was not checked before KeywordsOf (the rule named DenseModule, not its subclasses)
    message = _message(["experiment=seg_digits", "model.backbone.init=5"], tmp_path)
    assert "model.backbone.init=5 has the wrong type: create_backbone(init) expects a string or null" in message


def _config_targets() -> set[str]:
    out = subprocess.run(["grep", "-rh", "_target_:", str(ROOT / "conf")], capture_output=True, text=True).stdout
    return {line.split("_target_:")[1].split("#")[0].strip() for line in out.splitlines()}


def test_every_choice_list_of_a_shipped_target_resolves_to_a_module_constant():
    checked = 0
    for target in sorted(_config_targets() - {"hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"}):
        sig = schema.signature_of(target)
        for name, param in (sig.params if sig else {}).items():
            found = schema._metadata(param.annotation, Choices)
            if found is not None:
                values = found.values()
                assert values and all(v is None or isinstance(v, str) for v in values), (target, name)
                checked += 1
    assert checked >= 20  # repfusion, kf, dery and the dense modules declare theirs
