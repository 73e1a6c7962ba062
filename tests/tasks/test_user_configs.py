"""A user's own config folders and modules beside the packaged ones: --config-dir,
hydra.searchpath and KT_CONFIG_DIR compose with our groups; an unknown experiment or chain
lists what each folder offers and names the folders; a user `_target_` is checked by its
signature's annotations, and one that cannot be imported is named with its error's first line."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tasks.config.imports import locate
from tasks.config.location import CONF_DIR
from tasks.errors import UserError
from tasks.run.preflight import preflight_config
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "my_project"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the example project as the working folder, with no KT_CONFIG_DIR of the caller."""
    folder = tmp_path / "my_project"
    shutil.copytree(EXAMPLE, folder)
    monkeypatch.chdir(folder)
    monkeypatch.delenv("KT_CONFIG_DIR", raising=False)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("penalty", None)


def composed(args: list[str], log_dir: Path):
    return preflight_config(["kt-train", *args, f"paths.log_dir={log_dir}"]).config


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath", "KT_CONFIG_DIR"])
def test_a_user_experiment_composes_with_the_packaged_groups(how, project, tmp_path, monkeypatch):
    args = {
        "--config-dir": ["--config-dir", "conf"],
        "hydra.searchpath": ["hydra.searchpath=[file://conf]"],
        "KT_CONFIG_DIR": [],
    }[how]
    if how == "KT_CONFIG_DIR":
        monkeypatch.setenv("KT_CONFIG_DIR", "conf")  # relative: from the working folder
    cfg = composed([*args, "experiment=digits_penalty"], tmp_path / "logs")
    assert cfg.task_name == "digits_penalty"
    assert cfg.model._target_ == "penalty.ConfidencePenaltyClassifier" and cfg.model.beta == 0.1  # the user's
    assert cfg.model.optimizer._target_ == "torch.optim.SGD"  # the packaged model/classifier it extends
    assert cfg.data._target_ == "tasks.data.DigitsDataModule"  # the packaged data group


def test_a_user_target_is_checked_by_its_annotations(project, tmp_path):
    with pytest.raises(UserError) as err:
        composed(["--config-dir", "conf", "experiment=digits_penalty", "model.beta=-1"], tmp_path / "logs")
    assert str(err.value).startswith(
        "Config value model.beta=-1 is out of range: ConfidencePenaltyClassifier(beta) expects a value >= 0"
    )
    with pytest.raises(UserError, match=r"Unknown config key 'model.bta'. Did you mean 'model.beta'\?"):
        composed(["--config-dir", "conf", "experiment=digits_penalty", "model.bta=1"], tmp_path / "logs")
    with pytest.raises(UserError, match=r"ImageDataModule\(batch_size\) expects a value >= 1"):
        composed(["--config-dir", "conf", "experiment=digits_penalty", "data.batch_size=0"], tmp_path / "logs")
    assert not (tmp_path / "logs").exists()


def test_an_unknown_experiment_lists_each_folder_and_names_it(project, tmp_path):
    with pytest.raises(UserError) as err:
        composed(["--config-dir", "conf", "experiment=digits_penalti"], tmp_path / "logs")
    lines = str(err.value).splitlines()
    assert lines[0] == (
        "Could not find 'experiment/digits_penalti': no experiment config 'digits_penalti' in any config folder. "
        "Did you mean experiment=digits_penalty?"
    )
    packaged = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    assert lines[1] == f"  packaged ({CONF_DIR / 'experiment'}): {', '.join(packaged)}"
    assert lines[2] == f"  --config-dir ({project / 'conf' / 'experiment'}): digits_penalty"
    with pytest.raises(UserError) as err:
        composed(["experiment=digits_penalty"], tmp_path / "logs")  # no folder of the user's named
    assert str(err.value).splitlines()[2].startswith("  yours: no config folder given (--config-dir <folder>,")


def test_a_user_folder_that_is_missing_or_shadows_a_packaged_config_stops(project, tmp_path, monkeypatch):
    with pytest.raises(UserError, match=rf"--config-dir names {project / 'nowhere'}, which is not a folder"):
        composed(["--config-dir", "nowhere"], tmp_path / "logs")
    monkeypatch.setenv("KT_CONFIG_DIR", str(tmp_path / "gone"))
    with pytest.raises(UserError, match=rf"KT_CONFIG_DIR names {tmp_path / 'gone'}, which is not a folder"):
        composed([], tmp_path / "logs")
    monkeypatch.delenv("KT_CONFIG_DIR")
    shutil.copy(CONF_DIR / "data" / "digits.yaml", project / "conf" / "model" / "classifier.yaml")
    with pytest.raises(UserError) as err:
        composed(["hydra.searchpath=[file://conf]"], tmp_path / "logs")
    assert str(err.value) == (
        f"hydra.searchpath names {project / 'conf'}, whose ['model/classifier.yaml'] has the name of a packaged "
        "config, which is read first: yours would be ignored. Give yours a new name, e.g. model/my_classifier.yaml."
    )


def test_chains_by_name_come_from_the_packaged_and_the_users_folders(project, monkeypatch):
    from tasks.studies.chain import find_chain

    (project / "conf" / "chain").mkdir()
    shutil.copy(project / "my_chain.yaml", project / "conf" / "chain" / "my_study.yaml")
    with pytest.raises(UserError) as err:
        find_chain("my_study")
    lines = str(err.value).splitlines()
    assert lines[0] == "Unknown chain 'my_study' (or give a chain file by its path). Available:"
    assert lines[1].startswith(f"  packaged ({CONF_DIR / 'chain'}): dery_digits, ")
    assert lines[2].startswith("  yours: no config folder given (")
    monkeypatch.setenv("KT_CONFIG_DIR", "conf")
    assert find_chain("my_study") == project / "conf" / "chain" / "my_study.yaml"
    assert find_chain("repfusion_digits") == CONF_DIR / "chain" / "repfusion_digits.yaml"
    with pytest.raises(UserError) as err:
        find_chain("my_stduy")
    assert str(err.value).splitlines()[2] == f"  KT_CONFIG_DIR ({project / 'conf' / 'chain'}): my_study"
    with pytest.raises(UserError, match=r"Unknown chain 'conf.yaml': .*/conf.yaml is not there"):
        find_chain("conf.yaml")
    assert find_chain("my_chain.yaml") == Path("my_chain.yaml")  # by path, from the working folder


def refusal(target: str) -> str:
    with pytest.raises(UserError) as err:
        locate(target, "model._target_")
    return str(err.value)


def test_a_target_that_cannot_be_imported_is_named_with_its_first_error_line(project, tmp_path):
    (project / "needs_more.py").write_text("import not_an_installed_package\n")
    (project / "typo.py").write_text("def f(:\n")
    broken = refusal("needs_more.Net")
    assert broken == (
        f"model._target_='needs_more.Net': the module 'needs_more' ({project / 'needs_more.py'}) cannot be "
        "imported: ModuleNotFoundError: No module named 'not_an_installed_package'. Install what it imports, "
        "or fix the module."
    )
    with pytest.raises(UserError) as through_the_preflight:  # the typed check of the composed config
        composed(["--config-dir", "conf", "experiment=digits_penalty", "model._target_=needs_more.Net"], tmp_path)
    assert str(through_the_preflight.value) == broken
    assert refusal("typo.Net").startswith(
        f"model._target_='typo.Net': the module 'typo' ({project / 'typo.py'}) cannot be imported: SyntaxError: "
    )
    assert refusal("my_modules.Net").startswith(
        f"model._target_='my_modules.Net': no module 'my_modules' can be imported: it is not installed, and the "
        f"folder the command runs in ({project}) has no my_modules.py or my_modules/."
    )
    assert refusal("penalty.ConfidencePenaltyClasifier") == (
        f"model._target_='penalty.ConfidencePenaltyClasifier': 'penalty' ({project / 'penalty.py'}) has no "
        "'ConfidencePenaltyClasifier'. It has: ['ConfidencePenaltyClassifier', 'confidence_penalty_loss']. "
        "Fix the name in the config."
    )
    assert locate("penalty.ConfidencePenaltyClassifier", "x").__name__ == "ConfidencePenaltyClassifier"
    assert locate("torch.nn.functional.relu", "x") is F.relu  # a function inside a package's module


def test_the_example_loss_is_cross_entropy_minus_beta_times_entropy(project):
    from penalty import confidence_penalty_loss

    uniform = torch.zeros(3, 4)  # entropy log 4, cross-entropy log 4
    loss, entropy = confidence_penalty_loss(uniform, torch.tensor([0, 1, 3]), beta=0.25)
    assert entropy.item() == pytest.approx(torch.log(torch.tensor(4.0)).item(), abs=1e-6)
    assert loss.item() == pytest.approx(0.75 * torch.log(torch.tensor(4.0)).item(), abs=1e-6)
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    p = torch.tensor([2.0, 0.0, -1.0]).softmax(0)
    expected = -torch.log(p[0]) - 0.5 * -(p * p.log()).sum()
    assert confidence_penalty_loss(logits, torch.tensor([0]), beta=0.5)[0].item() == pytest.approx(
        expected.item(), abs=1e-6
    )
