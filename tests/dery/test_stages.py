"""DeRy's stages as a user runs them: the similarity cache, clear errors from the Hydra
apps, the configs of the digits and ImageNet set-ups, and a whole chain on the tiny zoo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
from omegaconf import OmegaConf
from safetensors.torch import load_file

from dery.spec import load_spec
from tasks.errors import UserError
from tasks.studies.chain import load_chain, plan
from tests.conftest import CONF, TINY, compose_config, run_cli
from tests.dery.conftest import PROBE, compose_stage


def test_similarity_is_cached_by_members_weights_and_probe(stages, tmp_path):
    from dery import similarity

    assert stages["sim"]["cache"]["hit"] is False
    cache = f"cache_dir={stages['root'] / 'cache'}"

    def run(overrides: list[str], name: str) -> dict:
        return similarity.compute(compose_stage("similarity", overrides, tmp_path / name), tmp_path / name)

    again = run(["dery/zoo=tiny", *PROBE, cache], "a")
    assert again["cache"]["hit"] is True and again["cache"]["matrix"] == stages["sim"]["cache"]["matrix"]
    assert (load_file(again["similarity"])["cka"] == load_file(stages["sim"]["similarity"])["cka"]).all()
    fewer = run(["dery/zoo=tiny", "probe.num_images=64", cache], "b")
    assert fewer["cache"]["hit"] is False  # other probe data: recomputed
    renamed = ["dery/zoo=tiny", *PROBE, cache, "zoo.members.vit.kwargs.depth=5"]
    assert run(renamed, "c")["cache"]["hit"] is False
    zoo = json.loads(Path(stages["sim"]["zoo"]).read_text())
    assert list(zoo["offsets"].values()) == [0, 9, 22] and (stages["similarity"] / "plots" / "cka.png").is_file()


def test_stage_apps_fail_with_one_message(tmp_path, stages):
    missing = run_cli(
        ["similarity=" + str(tmp_path / "none"), f"hydra.run.dir={tmp_path / 'p'}"], module="dery.partition"
    )
    assert missing.returncode == 2 and "No finished similarity run" in missing.stderr
    assert "Traceback" not in missing.stderr
    tight = run_cli(
        [f"partition={stages['partition']}", "budget.params=1000", f"hydra.run.dir={tmp_path / 's'}"],
        module="dery.search",
    )
    assert tight.returncode == 2 and "smallest feasible network has" in tight.stderr and "Traceback" not in tight.stderr
    with pytest.raises(UserError, match="zoo.members.*weights' must be set"):
        from dery import similarity

        similarity.compute(compose_stage("similarity", [], tmp_path / "d"), tmp_path / "d")


def test_digits_chain_and_configs_compose(tmp_path):
    chain = load_chain("dery_digits")
    runs = {r.stage: r for r in plan(chain, tmp_path, [], {}, None)}
    zoo_stages = [s for s in runs if s.startswith("zoo_")]
    assert len(zoo_stages) >= 4 and any("vit" in " ".join(runs[s].command) for s in zoo_stages)
    assert f"zoo.members.vit.weights=run:{tmp_path / 'zoo_vit'}" in runs["similarity"].command
    assert f"model.spec={tmp_path / 'search_small'}/spec.yaml" in runs["frozen_small"].command
    for stage in ("similarity", "partition", "search"):
        cfg = compose_stage(stage, [], tmp_path)
        assert cfg.task_name == f"dery_{stage}"
    cfg = compose_config(["experiment=dery_digits", "model.spec=/x/spec.yaml"], tmp_path)
    assert cfg.model._target_ == "dery.module.ReassembledModule" and cfg.model.mode == "frozen"


def test_imagenet_setup_composes_and_needs_its_data(tmp_path):
    zoo = OmegaConf.load(CONF / "dery" / "zoo" / "imagenet.yaml").zoo
    assert len(zoo.members) >= 20 and zoo.input_size == [3, 224, 224]
    for name, member in zoo.members.items():
        tag = member.weights.removeprefix("hub:")
        assert timm.is_model(member.arch) and tag in timm.list_pretrained(tag), name
    runs = {r.stage: r for r in plan(load_chain("dery_imagenet"), tmp_path, [], {}, None)}
    budgets = {
        s: [o for o in r.command if o.startswith(("budget.params=", "budget.flops="))]
        for s, r in runs.items()
        if s.startswith("search")
    }
    assert budgets == {
        "search_10m": ["budget.params=10e6", "budget.flops=6e9"],
        "search_30m": ["budget.params=30e6", "budget.flops=12e9"],
        "search_50m": ["budget.params=50e6", "budget.flops=20e9"],
        "search_90m": ["budget.params=90e6", "budget.flops=40e9"],
    }

    def stage_overrides(stage: str) -> list[str]:
        return [o for o in runs[stage].command[3:] if not o.startswith("hydra.")]

    sim = compose_stage("similarity", stage_overrides("similarity"), tmp_path)
    assert sim.data._target_ == "tasks.data.ImageFolderDataModule" and len(sim.zoo.members) == len(zoo.members)
    search = compose_stage("search", stage_overrides("search_90m"), tmp_path)
    assert search.budget.params == 90e6 and search.budget.min_params == 70e6 and search.num_classes == 1000
    from tasks.run.instantiate import build

    cfg = compose_config(["experiment=dery_imagenet", f"paths.data_dir={tmp_path}"], tmp_path)
    assert cfg.model.num_classes == 1000 and cfg.data.image_size == 224
    with pytest.raises(UserError, match=r"(?s)ImageFolder data not found.*Expected layout.*train/<class>"):
        build("data", cfg.data)


@pytest.mark.slow
def test_a_whole_chain_on_the_tiny_zoo(tmp_path):
    from tests.dery.test_module import reloaded_accuracy

    chain = {
        "stages": {
            "similarity": {
                "module": "dery.similarity",
                "overrides": ["dery/zoo=tiny", *PROBE, f"cache_dir={tmp_path / 'cache'}"],
            },
            "partition": {"module": "dery.partition", "overrides": ["similarity={run:similarity}", "restarts=5"]},
            "search": {
                "module": "dery.search",
                "overrides": [
                    "partition={run:partition}",
                    "budget.params=5e5",
                    "proxy.batches=1",
                    "proxy.batch_size=8",
                    f"cache_dir={tmp_path / 'cache'}",
                ],
            },
            "frozen": {
                "experiment": "dery_digits",
                "seeds": [0, 1],
                "overrides": ["model.spec={run:search}/spec.yaml", *TINY],
            },
            "table": {"module": "dery.report", "overrides": ["chain={run:similarity}/.."]},
        },
        "compare": {"metric": "test/acc", "rows": {"DeRy frozen": "frozen"}},
    }
    path = tmp_path / "tiny_chain.yaml"
    OmegaConf.save(OmegaConf.create(chain), path)
    result = run_cli(
        [str(path), "--dir", str(tmp_path / "chain")], module="tasks.chain", env={"KT_LOG_DIR": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "chain" / "chain_summary.json").read_text())
    # the chain's row: both seeds, each the accuracy its exported network reloads to
    accuracies = [reloaded_accuracy(tmp_path / "chain" / "frozen" / f"seed{s}") for s in (0, 1)]
    row = summary["rows"][0]
    assert row["label"] == "DeRy frozen" and row["estimate"]["n"] == 2
    assert row["estimate"]["mean"] == pytest.approx(sum(accuracies) / 2, abs=1e-6)
    for stage in ("similarity", "partition", "search"):
        assert json.loads((tmp_path / "chain" / stage / "summary.json").read_text())["stage"] == stage
    assert (tmp_path / "chain" / "frozen" / "seed0" / "plots" / "architecture.png").is_file()
    # the table stage: zoo rows, the network's row over its two seeds, and the proxy's tau
    text = (tmp_path / "chain" / "dery_table.md").read_text()
    assert json.loads((tmp_path / "chain" / "table" / "summary.json").read_text())["table"] == text
    rows = text.splitlines()
    assert rows[2].startswith("| zoo: resnet (resnet18) |")
    assert rows[2].endswith("| 0 | – | – |")  # random init: no accuracy
    spec = load_spec(json.loads((tmp_path / "chain" / "search" / "summary.json").read_text())["spec"])
    dery = next(r for r in rows if r.startswith("| DeRy <= 0.50M params, frozen ("))
    spread = abs(accuracies[0] - accuracies[1]) / 2**0.5
    assert (
        f") | {spec['params'] / 1e6:.3f}M | {spec['new_params'] / 1e6:.3f}M | {spec['flops'] / 1e6:.1f} | 2 | "
        f"{sum(accuracies) / 2:.4f} ± {spread:.4f} | ["
    ) in dery
    assert rows[-1].startswith("NASWOT against the members' test accuracy: Kendall tau –")
