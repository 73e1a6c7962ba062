"""kt-push, offline up to the upload: the folder handed to HfApi.upload_folder is timm's Hub
layout with a model card, loads in timm with the exported outputs, old-layout exports are
converted (their run's normalisation read from the run dir), and the Hub's errors are one message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import timm
import torch

from tasks.errors import UserError
from tasks.hub import push
from tasks.models.backbones import create_backbone, export_backbone, export_timm

X = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
DATA = {"mean": [0.3] * 3, "std": [0.2] * 3, "input_size": [3, 32, 32], "num_classes": 10}
RUN = {
    "task_name": "classify_digits",
    "experiment": "classify_digits",
    "seed": 3,
    "test": {"test/acc": 0.9},
    "overrides": ["experiment=classify_digits", "seed=3"],
}


class FakeHub:
    """HfApi's two calls, recorded; the uploaded folder is copied out before kt-push removes it."""

    def __init__(self, tmp: Path, fail: Exception | None = None):
        self.tmp, self.fail, self.calls = tmp, fail, []

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        if self.fail:
            raise self.fail
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None):
        self.calls.append(("upload_folder", repo_id, revision, commit_message))
        shutil.copytree(folder_path, self.tmp / "uploaded")
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


def _outputs(model):
    with torch.no_grad():
        return model.eval()(X)


def test_push_uploads_timms_hub_layout_with_a_model_card(tmp_path):
    torch.manual_seed(0)
    model = create_backbone("resnet18", num_classes=10)
    export_timm(model, tmp_path / "export", card={"run": RUN}, data=DATA)
    (tmp_path / "export" / "model.json").write_text("{}")  # an old export's model.json alias is not uploaded
    hub = FakeHub(tmp_path)
    url = push.push(tmp_path / "export", "me/digits", private=True, api=hub)
    assert url == "https://huggingface.co/me/digits/commit/abc"
    assert hub.calls == [
        ("create_repo", "me/digits", True, True),
        ("upload_folder", "me/digits", None, "Add timm export of classify_digits"),
    ]
    uploaded = tmp_path / "uploaded"
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert torch.equal(_outputs(model), _outputs(timm.create_model(f"local-dir:{uploaded}", pretrained=True)))
    readme = (uploaded / "README.md").read_text()
    assert readme.startswith("---\ntags:\n- image-classification\n- timm\n- kt-framework\nlibrary_name: timm\n---\n")
    assert "timm.create_model('hf-hub:me/digits', pretrained=True)" in readme and "import tasks" not in readme
    assert "| test/acc | 0.9000 |" in readme and "python train.py experiment=classify_digits seed=3" in readme
    assert "mean [0.3, 0.3, 0.3] and std [0.2, 0.2, 0.2]" in readme


def test_an_old_layout_export_is_converted_with_its_runs_normalisation(tmp_path):
    torch.manual_seed(0)
    model = create_backbone("resnet18", num_classes=10, small_input_stem=True)
    run_dir = tmp_path / "run"
    export_backbone(model, run_dir / "export", name="model")
    (run_dir / "export" / "card.json").write_text(json.dumps({**RUN, "run_dir": str(run_dir), "artifacts": {}}))
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(
        "seed: 3\ndata:\n  _target_: tasks.data.DigitsDataModule\n  image_size: 32\n  seed: ${seed}\n"
    )
    hub = FakeHub(tmp_path)
    push.push(run_dir / "export", "me/old", api=hub)
    uploaded = tmp_path / "uploaded"
    config = json.loads((uploaded / "config.json").read_text())
    from tasks.data.digits import DigitsDataModule

    assert config["architecture"] == "resnet18_smallstem" and config["run"]["test"] == RUN["test"]
    assert config["pretrained_cfg"]["mean"] == list(DigitsDataModule.mean)
    assert torch.equal(_outputs(model), _outputs(timm.create_model(f"local-dir:{uploaded}", pretrained=True)))
    assert "import tasks.models.backbones" in (uploaded / "README.md").read_text()


def test_an_old_export_without_its_run_dir_is_refused_before_any_upload(tmp_path):
    export_backbone(create_backbone("resnet18", num_classes=10), tmp_path / "export", name="model")
    hub = FakeHub(tmp_path)
    with pytest.raises(UserError, match="without the normalisation it was trained with"):
        push.push(tmp_path / "export", "me/old", api=hub)
    assert hub.calls == []


@pytest.mark.parametrize(
    "error,message",
    [
        (type("HFValidationError", (ValueError,), {})("Repo id must be in the form"), "is not a valid Hub repo id"),
        (type("HfHubHTTPError", (OSError,), {})("401 Client Error: Unauthorized"), "huggingface-cli login"),
        (ConnectionError("Failed to resolve 'huggingface.co'"), "Check the network connection"),
    ],
)
def test_hub_errors_are_one_message(tmp_path, error, message):
    export_timm(create_backbone("resnet18", num_classes=10), tmp_path / "export", data=DATA)
    with pytest.raises(UserError, match=message):
        push.push(tmp_path / "export", "me/x", api=FakeHub(tmp_path, fail=error))


def test_the_command_dry_run_stages_and_a_bad_export_exits_2(tmp_path, capsys):
    export_timm(create_backbone("resnet18", num_classes=10), tmp_path / "export", data=DATA)
    push.main([str(tmp_path / "export"), "me/x", "--dry-run", "--out", str(tmp_path / "staged")])
    assert sorted(p.name for p in (tmp_path / "staged").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "nothing uploaded" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        push.main([str(tmp_path / "staged" / "README.md"), "me/x", "--dry-run", "--out", str(tmp_path / "s2")])
    assert exit_.value.code == 2 and "is not valid JSON" in capsys.readouterr().err


def test_push_goes_through_huggingface_hubs_hfapi(tmp_path, monkeypatch):
    import huggingface_hub

    export_timm(create_backbone("resnet18", num_classes=10), tmp_path / "export", data=DATA)
    hub, made = FakeHub(tmp_path), []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda **kwargs: made.append(kwargs) or hub)
    push.main([str(tmp_path / "export"), "me/x", "--token", "hf_abc", "--revision", "dev", "--message", "m"])
    assert made == [{"token": "hf_abc", "library_name": "kt-framework"}]
    assert hub.calls[1] == ("upload_folder", "me/x", "dev", "m")
