"""Export cards and timm's Hub layout: an export reloads in plain timm (`local-dir:`) with the
same outputs, also in a process that never imports this project; old-layout exports still
load everywhere a path is accepted; the registry finds kinds through entry points; the run's
and the data's fields go into the one card; every bad card is one message."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import timm
import torch

from tasks.errors import UserError
from tasks.io import cards
from tasks.models.backbones import create_backbone, export_backbone, export_timm, load_backbone_weights, load_exported

DATA = {
    "mean": [0.1, 0.2, 0.3],
    "std": [0.4, 0.5, 0.6],
    "input_size": [3, 32, 32],
    "num_classes": 10,
    "label_names": [f"digit {i}" for i in range(10)],
}
X = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("resnet18", {"num_classes": 10}),
        ("resnet18", {"num_classes": 0, "small_input_stem": True}),
        ("mobilenetv3_small_050", {"num_classes": 10, "small_input_stem": True}),
        ("vit_tiny_patch16_224", {"num_classes": 10, "img_size": 32}),
    ],
)
def test_timm_local_dir_rebuilds_the_export_exactly(tmp_path, name, kwargs):
    torch.manual_seed(0)
    model = create_backbone(name, **kwargs)
    paths = export_timm(model, tmp_path, data=DATA)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert paths == {"weights": str(tmp_path / "model.safetensors"), "card": str(tmp_path / "config.json")}
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert torch.equal(_outputs(model), _outputs(reloaded))
    assert torch.equal(_outputs(model), _outputs(load_exported(tmp_path)))
    assert reloaded.pretrained_cfg["mean"] == DATA["mean"] and reloaded.pretrained_cfg["std"] == DATA["std"]
    assert list(reloaded.pretrained_cfg["input_size"]) == [3, 32, 32]
    config = timm.data.resolve_data_config({}, model=reloaded)
    assert list(config["mean"]) == DATA["mean"] and config["crop_pct"] == 1.0


def test_plain_timm_loads_an_export_without_this_project(tmp_path):
    torch.manual_seed(0)
    model = create_backbone("resnet18", num_classes=10)
    export_timm(model, tmp_path / "export", data=DATA)
    torch.save({"x": X, "y": _outputs(model)}, tmp_path / "expected.pt")
    script = (
        f"import sys, timm, torch; sys.path = [p for p in sys.path if p not in ('', {str(Path.cwd())!r})]\n"
        f"m = timm.create_model('local-dir:{tmp_path / 'export'}', pretrained=True).eval()\n"
        f"e = torch.load('{tmp_path / 'expected.pt'}', weights_only=True)\n"
        "assert 'tasks' not in sys.modules\n"
        "print(torch.equal(m(e['x']), e['y']), m.pretrained_cfg['label_names'][3])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "digit", "3"]


def test_the_card_carries_the_run_and_the_data_in_timms_own_fields(tmp_path):
    export_timm(
        create_backbone("resnet18", num_classes=10), tmp_path, card={"run": {"task_name": "t", "seed": 3}}, data=DATA
    )
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["kind"] == "timm" and config["format"] == 2 and config["architecture"] == "resnet18"
    assert config["run"] == {"task_name": "t", "seed": 3}
    assert config["label_names"] == DATA["label_names"]
    assert config["pretrained_cfg"]["pool_size"] is None  # timm's ImageNet (7, 7) no longer holds at 32 px
    assert not {"tag", "license", "origin_url", "paper_ids", "url"} & set(
        config["pretrained_cfg"]
    )  # not timm's weights
    assert "timm.create_model('local-dir:" in config["load"] and "import tasks.models.backbones" not in config["load"]
    export_timm(create_backbone("resnet18", small_input_stem=True), tmp_path / "small")
    assert json.loads((tmp_path / "small" / "config.json").read_text())["load"].startswith(
        "import tasks.models.backbones"
    )


def test_old_layout_exports_load_wherever_a_path_is_accepted(tmp_path):
    torch.manual_seed(0)
    model = create_backbone("resnet18", num_classes=10, small_input_stem=True)
    old = export_backbone(model, tmp_path / "old", name="backbone")
    card = cards.read_card(tmp_path / "old")
    assert (card.kind, card.legacy, card.path.name) == ("timm", True, "backbone.json")
    for path in (tmp_path / "old", old["card"]):
        assert torch.equal(_outputs(model), _outputs(load_exported(path)))
    new = tmp_path / "new"
    export_timm(model, new)
    for init in (new, new / "config.json", new / "model.safetensors", tmp_path / "old", old["card"], old["weights"]):
        target = create_backbone("resnet18", num_classes=10, small_input_stem=True, init=str(init))
        assert torch.equal(_outputs(model), _outputs(target)), init


def test_a_loaded_export_exports_again_to_the_same_network(tmp_path):
    torch.manual_seed(0)
    model = create_backbone("resnet18", num_classes=10, small_input_stem=True)
    export_timm(model, tmp_path / "a")
    export_timm(load_exported(tmp_path / "a"), tmp_path / "b")
    assert torch.equal(_outputs(model), _outputs(load_exported(tmp_path / "b")))


def _toy_loader(card: cards.Card, scale: float = 1.0) -> dict:
    return {"kind": card.kind, "value": card.require("value").fields["value"] * scale}


def test_kinds_come_from_the_entry_point_group(tmp_path, monkeypatch):
    point = metadata.EntryPoint(name="toy", value=f"{__name__}:_toy_loader", group=cards.GROUP)
    monkeypatch.setattr(cards, "_entry_points", lambda: {"toy": point})
    cards.write_card(tmp_path, "toy", {"value": 2.0})
    assert cards.load_card(tmp_path, scale=3.0) == {"kind": "toy", "value": 6.0}
    assert "toy" in cards.kinds() and "timm" in cards.kinds()
    with pytest.raises(UserError, match="of kind 'toy'; expected timm"):
        load_exported(tmp_path)
    cards.write_card(tmp_path, "toy", {})
    with pytest.raises(UserError, match=r"lacks the keys \['value'\]"):
        cards.load_card(tmp_path)


def test_the_installed_project_registers_its_kinds_as_entry_points():
    """pyproject.toml's [project.entry-points."kt.cards"] names every kind's loader (an install
    older than a kind misses it: pip install -e . again)."""
    from dery.module import KIND as REASSEMBLED
    from dery.module import reassembled_from_card
    from kf.assemble import KIND as ASSEMBLED
    from kf.assemble import assembled_from_card
    from kf.multihead import KIND as MULTI_HEAD
    from kf.multihead import multi_head_from_card
    from tasks.models.backbones.export import load_timm_card

    loaders = {
        "timm": load_timm_card,
        REASSEMBLED: reassembled_from_card,
        ASSEMBLED: assembled_from_card,
        MULTI_HEAD: multi_head_from_card,
    }
    assert {kind: cards._entry_points()[kind].load() for kind in loaders} == loaders
    assert cards.kinds() == sorted(loaders)


def test_stamp_writes_into_cards_only(tmp_path):
    export_timm(create_backbone("resnet18", num_classes=10), tmp_path)
    (tmp_path / "unet").mkdir()
    diffusers = {"_class_name": "UNet2DModel", "sample_size": 32}
    (tmp_path / "unet" / "config.json").write_text(json.dumps(diffusers))
    (tmp_path / "timesteps.json").write_text(json.dumps({"mode": "rl"}))
    cards.write_card(tmp_path / "heads", "toy", {"value": 1})
    stamped = cards.stamp(tmp_path, {"task_name": "t"}, {"mean": [0.3] * 3, "std": [0.2] * 3})
    assert stamped == [tmp_path / "config.json", tmp_path / "heads" / "card.json"]
    assert json.loads((tmp_path / "unet" / "config.json").read_text()) == diffusers
    assert json.loads((tmp_path / "timesteps.json").read_text()) == {"mode": "rl"}
    toy = json.loads((tmp_path / "heads" / "card.json").read_text())
    assert toy == {
        "kind": "toy",
        "format": 2,
        "value": 1,
        "run": {"task_name": "t"},
        "data": {"mean": [0.3] * 3, "std": [0.2] * 3},
    }
    assert json.loads((tmp_path / "config.json").read_text())["pretrained_cfg"]["mean"] == [0.3] * 3


def test_apply_data_follows_timms_rules():
    config = {
        "num_classes": 3,
        "pretrained_cfg": {
            "input_size": [3, 224, 224],
            "pool_size": [7, 7],
            "test_input_size": [3, 288, 288],
            "mean": [0.5] * 3,
        },
    }
    out = cards.apply_data(config, {"input_size": [3, 32, 32], "label_names": ["a", "b"]})
    assert out["pretrained_cfg"] == {
        "input_size": [3, 32, 32],
        "pool_size": None,
        "mean": [0.5] * 3,
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
    assert "label_names" not in out  # two names for three outputs: not the head's classes
    same = cards.apply_data(config, {"input_size": [3, 224, 224]})
    assert same["pretrained_cfg"]["pool_size"] == [7, 7]


def test_data_config_reads_what_the_datamodule_publishes():
    from tasks.data.digits import DigitsDataModule

    data = cards.data_config(DigitsDataModule(image_size=28))
    assert data == {
        "mean": list(DigitsDataModule.mean),
        "std": list(DigitsDataModule.std),
        "input_size": [3, 28, 28],
        "num_classes": 10,
    }
    assert cards.data_config(None) == {}


@pytest.mark.parametrize(
    "content,message",
    [
        ({"architecture": "resnet18"}, "is not an export card of this project: it has no 'kind'"),
        ({"kind": "nope", "format": 2}, "No loader for export cards of kind 'nope' (known kinds: ["),
        ({"kind": "timm", "format": "two", "architecture": "resnet18"}, "format"),
        (
            {
                "kind": "timm",
                "format": 2,
                "architecture": "resnet18",
                "pretrained_cfg": {},
                "weights": "../x.safetensors",
            },
            "names the file '../x.safetensors' outside its folder",
        ),
        (
            {"kind": "timm", "format": 2, "architecture": "resnet999", "pretrained_cfg": {}},
            "names the architecture 'resnet999', which this timm",
        ),
    ],
)
def test_bad_cards_are_one_message(tmp_path, content, message):
    (tmp_path / "card.json").write_text(json.dumps(content))
    with pytest.raises(UserError) as err:
        cards.load_card(tmp_path / "card.json")
    assert message in str(err.value)


def test_folders_without_one_card_say_what_they_hold(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match=r"has no export card \(it holds \['weights.safetensors'\]\)"):
        cards.read_card(tmp_path)
    for name in ("a.json", "b.json"):
        cards.write_card(tmp_path, "toy", {}, name=name)
    with pytest.raises(UserError, match=r"several cards \['a.json', 'b.json'\]: name one"):
        cards.read_card(tmp_path)
    export_timm(create_backbone("resnet18", num_classes=0), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(UserError, match="Weights of export card .*config.json not found"):
        load_exported(tmp_path)


def test_weights_under_a_card_that_do_not_fit_are_refused(tmp_path):
    export_timm(create_backbone("resnet18", num_classes=0), tmp_path)
    with pytest.raises(UserError, match="do not (fit|match)"):
        load_backbone_weights(create_backbone("resnet34", num_classes=0), tmp_path)
