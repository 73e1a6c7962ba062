"""Every experiment composes with every trainer preset and passes start-up validation."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tasks.config.check import check_config
from tasks.config.registry import stage_apps
from tasks.errors import UserError
from tasks.run.preflight import SHARED_APPS
from tests.conftest import CONF, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (CONF / "trainer").glob("*.yaml"))


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_with_trainer(experiment, trainer, tmp_path):
    extra = ["data.root=/some/folder"] if experiment == "repfusion_labelfree" else []  # a folder of the user's images
    cfg = compose_config([f"experiment={experiment}", f"trainer={trainer}", *extra], tmp_path)
    check_config(cfg)
    assert cfg.task_name and cfg.task_name != "train", "every experiment names its runs"
    assert OmegaConf.select(cfg, "trainer._target_") == "pytorch_lightning.Trainer"


@pytest.mark.parametrize(
    "group,option",
    [("logger", p.stem) for p in (CONF / "logger").glob("*.yaml")]
    + [("callbacks", p.stem) for p in (CONF / "callbacks").glob("*.yaml")]
    + [("debug", p.stem) for p in (CONF / "debug").glob("*.yaml")]
    + [("data", p.stem) for p in (CONF / "data").glob("*.yaml")]
    + [("augment", p.stem) for p in (CONF / "augment").glob("*.yaml")],
)
def test_group_options_compose(group, option, tmp_path):
    extra = ["data.root=/some/folder"] if option == "imagefolder" else []
    cfg = compose_config([f"{group}={option}", *extra], tmp_path)
    check_config(cfg, sections=("model", "trainer", "callbacks", "logger"))


def test_launchers_and_sweeper_compose(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        slurm = compose(
            "train", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4"], return_hydra_config=True
        )
        local = compose("train", overrides=["hydra/launcher=submitit_local"], return_hydra_config=True)
        optuna = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert slurm.hydra.launcher.tasks_per_node == 4 == slurm.hydra.launcher.gpus_per_node
    assert "submitit" in local.hydra.launcher._target_.lower()
    assert optuna.hydra.sweeper.params["model.optimizer.lr"].startswith("interval")


def test_unknown_target_key_is_named_with_suggestion(tmp_path):
    cfg = compose_config(["+trainer.max_epoch=3"], tmp_path)
    with pytest.raises(UserError, match=r"trainer\.max_epoch.*max_epochs"):
        check_config(cfg)


def test_run_dirs_are_unique_per_process_and_microsecond():
    text = (CONF / "hydra" / "default.yaml").read_text()
    assert "%f" in text and "${pid:}" in text


@pytest.mark.parametrize("chain_name", sorted(p.stem for p in (CONF / "chain").glob("*.yaml")))
def test_every_chain_stage_composes(chain_name, tmp_path):
    """Each stage of each chain in conf/chain/, with its overrides and placeholders, composes
    as its command line would (a typo in a chain file fails here, not an hour into a run)."""
    from tasks.studies.chain import load_chain, plan

    for run in plan(load_chain(chain_name), tmp_path, [], {}, None):
        args = [a for a in run.command[2:] if not a.startswith("hydra.run.dir=")]
        assert run.command[1] == "-m"  # every stage is a module (`-m tasks.train` for an experiment): no checkout path
        apps = {**SHARED_APPS, **stage_apps()}
        if args[0] not in apps:  # a stage app without a Hydra config
            continue
        cfg = compose_config(args[1:], tmp_path, config_name=apps[args[0]])
        if args[0] == "tasks.train":
            check_config(cfg, sections=("data", "model", "trainer", "callbacks", "logger"))
        assert cfg is not None


# The originals' toolbox (DeRy configs/dery/imagenet/* + _base_/datasets/imagenet_bs64_swin_224.py;
# KF cls/configs/_base_/datasets/cifar10_bs128.py): docs/dery.md and docs/kf.md have the tables.
ORIGINAL_TOOLBOX = {
    "dery_imagenet": {"ops": "increasing", "erase_p": 0.25, "mixup": (0.1, 1.0, 1.0, 0.5, 0.1), "smoothing": 0.0},
    "kf_cifar10": {"ops": "plain", "erase_p": 0.2, "mixup": None, "smoothing": 0.1},
}


@pytest.mark.parametrize("experiment", sorted(ORIGINAL_TOOLBOX))
def test_original_recipes_compose_with_their_toolbox(experiment, tmp_path):
    from hydra.utils import instantiate

    from tasks.data.toolbox import MixupCutmix

    want = ORIGINAL_TOOLBOX[experiment]
    cfg = compose_config([f"experiment={experiment}"], tmp_path)
    check_config(cfg)
    rand_augment = instantiate(cfg.data.rand_augment)._transform(32)  # timm's RandAugment, as the run builds it
    assert rand_augment.num_layers == 2
    assert {(op.magnitude, op.magnitude_std) for op in rand_augment.ops} == {(9, 0.5)}
    assert ("PosterizeIncreasing" in {op.name for op in rand_augment.ops}) == (want["ops"] == "increasing")
    erasing = instantiate(cfg.data.random_erasing)
    assert (erasing.probability, erasing.mode) == (want["erase_p"], "pixel")
    mixup = cfg.model.get("mixup")
    if want["mixup"] is None:
        assert mixup is None
    else:
        timm_mixup = MixupCutmix(**mixup, num_classes=cfg.model.num_classes)._mixup
        assert (
            timm_mixup.mixup_alpha,
            timm_mixup.cutmix_alpha,
            timm_mixup.mix_prob,
            timm_mixup.switch_prob,
            timm_mixup.label_smoothing,
        ) == want["mixup"]
    assert cfg.model.label_smoothing == want["smoothing"]
