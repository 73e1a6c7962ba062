"""A code-carrying pickle is refused, and its payload (it would create a marker file) never
runs, in every place a file is accepted: resume, backbone init, the diffusion teacher, a
zoo member's file:, a zoo member's run card, the KF teacher checkpoint and card, the DeRy
spec and the DeRy export card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tasks.errors import UserError
from tests.conftest import TINY, run_in_process
from tests.dery.conftest import stages, tiny_spec  # noqa: F401  (fixtures)
from tests.tasks.faults import evil_checkpoint

SMALL = {"channels": [8, 16, 32, 64], "stem_width": 8}
REFUSED = (
    r"Refusing to load .*: it holds pickled Python objects that would run code when loaded "
    r"\(it asks to import getattr\)"
)


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """(a tensors-plus-payload checkpoint, the marker its payload would create)."""
    marker = tmp_path / "payload_ran"
    return evil_checkpoint(tmp_path / "evil.ckpt", marker), marker


def _backbone_state() -> dict:
    from tasks.models.backbones import create_backbone

    return create_backbone("resnet10t", **SMALL).state_dict()


def test_resume(evil, tmp_path):
    path, marker = evil
    with pytest.raises(UserError, match=REFUSED):
        run_in_process([*TINY, f"resume={path}"], tmp_path / "run")
    assert not marker.exists()


def test_backbone_init(evil, tmp_path):
    path, marker = evil
    with pytest.raises(UserError, match=REFUSED):
        run_in_process([*TINY, f"model.backbone.init={path}"], tmp_path / "run")
    assert not marker.exists()


def test_diffusion_teacher_folder(evil, tmp_path):
    from repfusion.teacher import load_unet
    from tests.repfusion.conftest import make_unet

    path, marker = evil
    folder = tmp_path / "teacher"
    make_unet().save_pretrained(folder, safe_serialization=True)
    shutil.copy(path, folder / "diffusion_pytorch_model.bin")
    assert type(load_unet(str(folder))).__name__ == "UNet2DModel"  # the safetensors file is read, the pickle never
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(UserError, match=r"holds only pickle weights \(diffusion_pytorch_model.bin\)"):
        load_unet(str(folder))
    shutil.copy(path, folder / "diffusion_pytorch_model.safetensors")  # a pickle under the safetensors name
    with pytest.raises(UserError, match="is named .safetensors but it is a zip archive"):
        load_unet(str(folder))
    assert not marker.exists()


def test_zoo_member_file(evil):
    from dery.zoo import load_model

    path, marker = evil
    with pytest.raises(UserError, match=REFUSED):
        load_model("m", "resnet10t", dict(SMALL), f"file:{path}")
    assert not marker.exists()


def _card_pointing_at(weights: Path, folder: Path) -> Path:
    """An export card (as export_backbone writes one) whose weights file is `weights`."""
    from tasks.models.backbones import create_backbone, export_backbone

    card = Path(export_backbone(create_backbone("resnet10t", num_classes=10, **SMALL), folder, name="model")["card"])
    info = json.loads(card.read_text())
    shutil.copy(weights, folder / "model.pth")
    card.write_text(json.dumps({**info, "weights": "model.pth"}))
    return card


def test_zoo_member_run_card(evil, tmp_path):
    from dery.zoo import load_model

    path, marker = evil
    _card_pointing_at(path, tmp_path / "run" / "export")
    with pytest.raises(UserError, match=REFUSED):
        load_model("m", None, {}, f"run:{tmp_path / 'run'}")
    assert not marker.exists()


def test_kf_teacher_checkpoint_and_card(evil, tmp_path):
    from kf.teacher import TeacherSpec, load_teacher

    path, marker = evil
    with pytest.raises(UserError, match=REFUSED):
        load_teacher(TeacherSpec(source=str(path), arch="resnet10t", timm_kwargs=SMALL), {"label": 10})
    card = _card_pointing_at(path, tmp_path / "export")
    with pytest.raises(UserError, match=REFUSED):
        load_teacher(TeacherSpec(source=str(card)), {"label": 10})
    assert not marker.exists()


def test_dery_spec(evil, tmp_path):
    import yaml

    from dery.spec import FORMAT, build_network, load_spec

    path, marker = evil
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text(f"format: {FORMAT}\nmembers: !!python/object/apply:pathlib.Path.touch ['{marker}']\n")
    with pytest.raises(
        UserError, match=r"DeRy spec .*tagged.yaml is not valid YAML \(could not determine a constructor"
    ):
        load_spec(tagged)
    pickled = tmp_path / "spec.yaml"
    shutil.copy(path, pickled)
    with pytest.raises(
        UserError, match=r"DeRy spec .*spec.yaml is a zip archive \(PyTorch's checkpoint format\), not a text"
    ):
        load_spec(pickled)
    members = {
        "m": {"arch": "resnet10t", "kwargs": SMALL, "weights": f"file:{path}", "nodes": ["layer1"], "layout": "nchw"}
    }
    spec = tmp_path / "member.yaml"
    blocks = [{"member": "m", "nodes": ["layer1"]}]
    spec.write_text(
        yaml.safe_dump({"format": FORMAT, "members": members, "blocks": blocks, "stem": {}, "adapters": [], "head": {}})
    )
    with pytest.raises(UserError, match=REFUSED):
        build_network(load_spec(spec))
    assert not marker.exists()


def test_dery_export_card(evil, tiny_spec, tmp_path):  # noqa: F811
    import yaml

    from dery.module import load_reassembled

    path, marker = evil
    shutil.copy(path, tmp_path / "model.pth")
    card = tmp_path / "model.json"
    spec = yaml.safe_load(Path(tiny_spec).read_text())
    card.write_text(json.dumps({"kind": "dery-reassembled", "weights": "model.pth", "spec": spec}))
    with pytest.raises(UserError, match=REFUSED):
        load_reassembled(card)
    assert not marker.exists()


def test_the_payload_is_real(evil):
    """The control: an unsafe load of the same file does run the payload."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.is_file()
