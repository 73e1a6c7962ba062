"""Training a reassembled network: frozen blocks keep their weights and (by default) their
BN statistics, the original's BN updating as an option, full training moves everything,
the export of every mode reloads to the tested accuracy, and trainer=ddp_cpu runs the full
training (its export holds the trained weights)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dery.module import load_reassembled
from dery.spec import load_spec
from dery.zoo import load_model
from tasks.errors import UserError
from tests.conftest import TINY, read_summary, run_cli, run_in_process


def _blocks_vs_zoo(spec: dict, state: dict) -> tuple[bool, bool]:
    """(block parameters equal the zoo's, block BN running statistics equal the zoo's)."""
    params_same, stats_same = True, True
    for k, block in enumerate(spec["blocks"]):
        source = spec["members"][block["member"]]
        model = load_model(block["member"], source["arch"], source["kwargs"], source["weights"])[0]
        for i, node in enumerate(block["nodes"]):
            for key, value in model.get_submodule(node).state_dict().items():
                same = torch.equal(state[f"blocks.{k}.{i}.{key}"], value)
                if key.endswith(("running_mean", "running_var")):
                    stats_same &= same
                elif not key.endswith("num_batches_tracked"):
                    params_same &= same
    return params_same, stats_same


def reloaded_accuracy(run_dir) -> float:
    """Accuracy of the exported network on the one test batch that TINY tests."""
    from tasks.data import DigitsDataModule

    net = load_reassembled(run_dir / "export" / "model.json")
    data = DigitsDataModule(batch_size=64)  # as conf/data/digits.yaml
    data.setup("test")
    x, y = next(iter(data.test_dataloader()))
    with torch.no_grad():
        return (net(data.normalize(x)).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize(
    "mode,update_bn,expect",
    [("frozen", False, (True, True)), ("frozen", True, (True, False)), ("full", False, (False, False))],
)
def test_training_modes(tiny_spec, tmp_path, mode, update_bn, expect):
    run_dir = tmp_path / "run"
    summary = run_in_process(
        [
            "experiment=dery_digits",
            f"model.spec={tiny_spec}",
            f"model.mode={mode}",
            f"model.update_block_bn={update_bn}",
            *TINY,
        ],
        run_dir,
    )
    card = json.loads((run_dir / "export" / "model.json").read_text())
    spec = load_spec(tiny_spec)
    assert card["trainable_params"] == (spec["new_params"] if mode == "frozen" else spec["params"])
    state = load_file(str(run_dir / "export" / "model.safetensors"))
    assert _blocks_vs_zoo(spec, state) == expect
    assert (run_dir / "plots" / "architecture.png").is_file()
    assert reloaded_accuracy(run_dir) == pytest.approx(summary["test"]["test/acc"], abs=1e-6)


def test_class_count_must_match_the_spec(tiny_spec, tmp_path):
    with pytest.raises(UserError, match="10-class head"):
        run_in_process(
            ["experiment=dery_digits", f"model.spec={tiny_spec}", "model.num_classes=7", *TINY], tmp_path / "r"
        )
    with pytest.raises(UserError, match="model.mode"):
        run_in_process(["experiment=dery_digits", f"model.spec={tiny_spec}", "model.mode=half", *TINY], tmp_path / "s")


@pytest.mark.slow
def test_full_training_under_ddp_cpu(tiny_spec, tmp_path):
    result = run_cli(
        [
            "experiment=dery_digits",
            f"model.spec={tiny_spec}",
            "model.mode=full",
            "trainer=ddp_cpu",
            *TINY,
            f"hydra.run.dir={tmp_path / 'ddp'}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(tmp_path / "ddp")
    assert "MEMBER: 2/2" in result.stdout + result.stderr  # two processes
    assert summary["global_step"] == 2 and "test/acc" in summary["test"]
    net = load_reassembled(tmp_path / "ddp" / "export" / "model.json")
    exported = load_file(str(tmp_path / "ddp" / "export" / "model.safetensors"))
    assert all(torch.equal(value, exported[key]) for key, value in net.state_dict().items())
    assert _blocks_vs_zoo(load_spec(tiny_spec), exported) == (False, False)  # the blocks trained


def test_random_init_control(tiny_spec, tmp_path):
    """model.init=random: the same network, its blocks drawn from the run's seed instead of the zoo."""
    from dery.spec import build_network

    spec = load_spec(tiny_spec)
    zoo, one, two = (
        build_network(spec),
        build_network(spec, False, random_seed=1),
        build_network(spec, False, random_seed=2),
    )
    blocks = [{k: v for k, v in net.blocks.state_dict().items() if v.is_floating_point()} for net in (zoo, one, two)]
    assert blocks[0].keys() == blocks[1].keys() == blocks[2].keys()
    for key in blocks[0]:
        if "running" not in key and blocks[0][key].std() > 0:  # weights (not BN statistics or constant inits)
            assert not torch.equal(blocks[0][key], blocks[1][key]) and not torch.equal(
                blocks[1][key], blocks[2][key]
            ), key
    # other weights; the same BN statistics, as the tiny zoo is an untrained random init too
    assert _blocks_vs_zoo(spec, {f"blocks.{k}": v for k, v in one.blocks.state_dict().items()}) == (False, True)
    with pytest.raises(UserError, match="model.init=random with model.mode=frozen"):
        run_in_process(
            ["experiment=dery_digits", f"model.spec={tiny_spec}", "model.init=random", *TINY], tmp_path / "r"
        )


def test_the_export_loads_through_the_card_registry_in_both_layouts(tiny_spec, tmp_path):
    """load_card on the export folder and load_reassembled on a card as the writer before
    tasks.io.cards wrote it (no format field) both give the exported network exactly."""
    import functools
    import shutil

    from dery.module import KIND, ReassembledModule
    from tasks.io.cards import load_card, read_card

    module = ReassembledModule(str(tiny_spec), 10, functools.partial(torch.optim.AdamW, lr=1e-3)).eval()
    files = module.export_artifacts(tmp_path / "new")
    card = json.loads((tmp_path / "new" / "model.json").read_text())
    assert (card["kind"], card["format"], read_card(tmp_path / "new").kind) == (KIND, 2, KIND)
    (tmp_path / "old").mkdir()
    shutil.copy(files["weights"], tmp_path / "old" / "model.safetensors")
    (tmp_path / "old" / "model.json").write_text(json.dumps({k: v for k, v in card.items() if k != "format"}))
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = module.net(x)
        for net in (load_card(tmp_path / "new"), load_reassembled(tmp_path / "old" / "model.json")):
            assert not net.training and torch.equal(net(x), want)
    with pytest.raises(UserError, match="of kind 'dery-reassembled'; expected timm"):
        load_card(tmp_path / "new", kinds_allowed=("timm",))
