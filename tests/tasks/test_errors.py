"""The error boundary: typed config checks (type, range, choice; **kwargs targets followed
to the class they forward to), the check before anything is written (sweeps included), the
guard's exit codes and one-line bug report, a failed start that leaves no run dir and no
W&B run, a non-finite loss that stops the run and keeps the last good checkpoint, and
writers that never leave half files."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tasks.config import rules as schema_rules
from tasks.config.check import check_command
from tasks.errors import TrainingDiverged, UserError
from tasks.io import files
from tasks.run.boundary import discard_fresh_run_dir, run_guarded
from tasks.run.preflight import preflight
from tests.conftest import CONF, TINY, compose_config, run_in_process

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _check(overrides: list[str], tmp_path: Path, command: str = "train") -> str:
    cfg = compose_config(overrides, tmp_path / "run", "train" if command == "train" else command)
    with pytest.raises(UserError) as err:
        check_command(cfg, command)
    return str(err.value)


# --- typed configs --------------------------------------------------------------------------
def test_a_wrong_type_names_the_key_the_value_and_the_expected_type(tmp_path):
    assert _check(["trainer.max_epochs=abc"], tmp_path) == (
        "Config value trainer.max_epochs='abc' (a string) has the wrong type: Trainer(max_epochs) expects an integer "
        "or null."
    )


@pytest.mark.parametrize(
    "override,expected",
    [
        ("model.optimizer.lr=-0.1", "model.optimizer.lr=-0.1 is out of range: SGD(lr) expects a value > 0"),
        ("model.optimizer.lr=0", "model.optimizer.lr=0 is out of range: SGD(lr) expects a value > 0"),
        (
            "data.val_fraction=1.5",
            "data.val_fraction=1.5 is out of range: DigitsDataModule(val_fraction) expects a value in [0, 1]",
        ),
        ("data.batch_size=-3", "data.batch_size=-3 is out of range: ImageDataModule(batch_size) expects a value >= 1"),
        ("data.batch_augment.degrees=-5", "data.batch_augment.degrees=-5 is out of range: RandomAffine(degrees)"),
        ("seed=-1", "seed=-1 is out of range: TrainRun(seed) expects a value in [0, 4294967295]"),
        (
            "trainer.precision=33",
            "trainer.precision=33 is not a valid choice: Trainer(precision) expects one of [64, 32, 16,",
        ),
        (
            "callbacks.model_checkpoint.mode=maximum",
            "mode='maximum' (a string) is not a valid choice: ModelCheckpoint(mode) expects one of ['min', 'max']",
        ),
        (
            "monitor.mode=up",
            "monitor.mode='up' (a string) is not a valid choice: Monitor(mode) expects one of ['min', 'max']",
        ),
        ("test=maybe", "test='maybe' (a string) has the wrong type: TrainRun(test) expects true or false"),
        (
            "trainer.devices=abc",
            "trainer.devices='abc' (a string) is not valid: Trainer(devices) expects auto, a count",
        ),
        (
            "trainer.accelerator=tpuu",
            "trainer.accelerator='tpuu' (a string) is not a valid choice: Trainer(accelerator)",
        ),
        (
            "model.backbone.init=5",
            "model.backbone.init=5 has the wrong type: create_backbone(init) expects a string or null",
        ),
        ("model.label_smoothing=2", "model.label_smoothing=2 is out of range: ClassificationModule(label_smoothing)"),
    ],
)
def test_wrong_values_of_the_classifier_run(override, expected, tmp_path):
    assert expected in _check([override], tmp_path)


def test_kwargs_targets_are_checked_through_the_class_they_forward_to(tmp_path):
    # DigitsDataModule(**kwargs) hands batch_size, seed, ... to ImageDataModule.
    message = _check(["data.batch_size=big"], tmp_path)
    assert "data.batch_size='big' (a string) has the wrong type: ImageDataModule(batch_size) expects an int" in message
    message = _check(["+data.batch_sise=8"], tmp_path)
    assert message.startswith(
        "Unknown config key 'data.batch_sise': tasks.data.DigitsDataModule does not take "
        "'batch_sise'. "
        "Did you mean 'batch_size'"
    )
    assert "'eval_batch_size'" in message and "'val_fraction'" in message  # keys of both classes are valid


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["experiment=kf_digits", "model.teacher.bn_mode=weird"],
            "TeacherSpec(bn_mode) expects one of ['eval', 'train']",
        ),
        (
            ["experiment=kf_digits", "+model.teacher.sorce=x"],
            "Unknown config key 'model.teacher.sorce': kf.teacher.TeacherSpec "
            "does not take 'sorce'. Did you mean 'source'?",
        ),
        (
            ["experiment=kf_digits", "model.kd_loss=l1"],
            "model.kd_loss='l1' (a string) is not a valid choice: KFModule(kd_loss) expects one of ['kl', 'mse']",
        ),
        (
            ["experiment=dery_digits", "model.mode=half"],
            "model.mode='half' (a string) is not a valid choice: "
            "ReassembledModule(mode) expects one of ['frozen', 'full']",
        ),
        (
            ["experiment=repfusion_digits", "model.timesteps.mode=random"],
            "TimestepPolicy(mode) expects one of ['rl', 'uniform'",
        ),
        (
            ["experiment=repfusion_digits", "model.ema_decay=1.5"],
            "RepFusionModule(ema_decay) expects a value in [0, 1]",
        ),
        (
            ["experiment=seg_digits", "model.loss_average=most"],
            "SegmentationModule(loss_average) expects one of ['all', 'valid']",
        ),
    ],
)
def test_method_choices_come_from_the_modules_constants(overrides, expected, tmp_path):
    assert expected in _check(overrides, tmp_path)


def test_every_choice_list_resolves_to_a_module_constant():
    for key, found in schema_rules.CHOICES.items():
        values = found.values() if isinstance(found, schema_rules.Choices) else found
        assert values and all(v is None or isinstance(v, str) for v in values), key


@pytest.mark.parametrize(
    "stage,overrides,expected",
    [
        (
            "dery/partition",
            ["similarity=/x", "K=0"],
            "Config value K=0 is out of range: PartitionStage(K) expects a value >= 1",
        ),
        (
            "dery/partition",
            ["similarity=/x", "objective=median"],
            "objective='median' (a string) is not a valid choice: "
            "PartitionStage(objective) expects one of ['anchor', "
            "'pairwise']",
        ),
        (
            "dery/search",
            ["partition=/x", "mode=greedy"],
            "SearchStage(mode) expects one of ['random', 'exhaustive', 'milp']",
        ),
        (
            "dery/search",
            ["partition=/x", "budget.params=-5"],
            "budget.params=-5 is out of range: Budget(params) expects a value > 0",
        ),
        ("dery/similarity", ["dery/zoo=tiny", "probe.split=dev"], "probe.split='dev' (a string) is not a valid choice"),
        (
            "dery/similarity",
            ["dery/zoo=tiny", "device=gpu0"],
            "device='gpu0' (a string) is not valid: SimilarityStage(device)",
        ),
        (
            "dery/similarity",
            ["dery/zoo=tiny", "+zoo.members.a.accuracy=1.2"],
            "zoo.members.a.accuracy=1.2 is out of range: ZooMember(accuracy) expects a value in [0, 1]",
        ),
        (
            "dery/similarity",
            ["dery/zoo=tiny", "+zoo.members.a.wieghts=random"],
            "Unknown config key 'zoo.members.a.wieghts'",
        ),
    ],
)
def test_dery_stage_configs_are_typed(stage, overrides, expected, tmp_path):
    assert expected in _check(overrides, tmp_path, stage)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_experiment_passes_the_check(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}"], tmp_path / "run")
    missing = [k for k in __import__("omegaconf").OmegaConf.missing_keys(cfg) if not k.startswith("hydra")]
    if missing:
        pytest.skip(f"{experiment} needs {missing} from the command line")
    check_command(cfg, "train")


@pytest.mark.parametrize("chain", sorted(p.stem for p in (CONF / "chain").glob("*.yaml")))
def test_every_shipped_chain_passes_the_stage_checks(chain, tmp_path):
    """What `python -m tasks.chain <name>` checks before its first stage: no false alarm."""
    from tasks.run.preflight import check_stage_commands
    from tasks.studies.chain import load_chain, plan

    check_stage_commands([r.command for r in plan(load_chain(chain), tmp_path, [], {}, None)])


# --- checked before anything is written ---------------------------------------------------
def test_preflight_stops_a_bad_value_before_hydra_writes_anything(tmp_path):
    with pytest.raises(UserError, match="trainer.max_epochs='abc'"):
        preflight(["train.py", "trainer.max_epochs=abc", f"paths.log_dir={tmp_path}"], CONF)
    with pytest.raises(
        UserError, match=r"data.batch_size=-1 is out of range.*\(in the sweep job with \['data.batch_size=-1'\]\)"
    ):
        preflight(["train.py", "-m", "seed=1,2", "data.batch_size=8,-1", f"paths.log_dir={tmp_path}"], CONF)
    assert list(tmp_path.iterdir()) == []


def test_a_valid_key_not_in_the_config_is_explained_with_the_plus_prefix(tmp_path):
    with pytest.raises(UserError) as err:
        preflight(["dery.similarity", "dery/zoo=tiny", "zoo.members.resnet.accuracy=0.4"], CONF, "dery/similarity")
    assert str(err.value) == (
        "'accuracy' is a valid key of 'zoo.members.resnet' but this config does not set it yet, "
        "so it "
        "cannot be overridden. Add it with a '+': +zoo.members.resnet.accuracy=0.4"
    )
    with pytest.raises(
        UserError,
        match=r"Unknown config key 'zoo.members.resnet.acuracy'. Did you mean "
        r"'zoo.members.resnet.accuracy'\?",
    ):
        preflight(["dery.similarity", "dery/zoo=tiny", "zoo.members.resnet.acuracy=0.4"], CONF, "dery/similarity")


def test_resume_of_a_file_that_is_not_a_checkpoint_stops_before_the_run(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(
        UserError, match=r"resume=.*junk.ckpt is corrupt or not a PyTorch checkpoint: it is a binary file"
    ):
        preflight(["train.py", f"resume={junk}", f"paths.log_dir={tmp_path / 'logs'}"], CONF)
    assert not (tmp_path / "logs").exists()


# --- the guard ------------------------------------------------------------------------------
def test_a_user_error_exits_2_with_one_message_and_no_traceback(capsys):
    def body():
        raise UserError("data.root is missing. Set data.root=<folder>.")

    with pytest.raises(SystemExit) as exit_:
        run_guarded("train.py", body)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.strip() == "error: data.root is missing. Set data.root=<folder>."


def test_a_bug_exits_1_with_one_line_and_the_log_holds_the_traceback(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KT_LOG_DIR", str(tmp_path))

    def body():
        return {}["missing key"]

    with pytest.raises(SystemExit) as exit_:
        run_guarded("kt-report", body)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and "\n" not in err and "Traceback" not in err
    assert err.startswith(
        "error: this is a bug in kt-report, not a mistake of yours (KeyError: 'missing key'). The full traceback is in "
    )
    (log,) = (tmp_path / "errors").glob("kt-report-*.log")
    assert str(log) in err and "Traceback (most recent call last)" in log.read_text() and "in body" in log.read_text()


def test_an_argparse_style_exit_message_is_a_user_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_guarded("kt-report", lambda: (_ for _ in ()).throw(SystemExit("error: no summary.json under x.")))
    assert exit_.value.code == 2 and capsys.readouterr().err.strip() == "error: no summary.json under x."


def test_a_failed_start_discards_only_its_own_run_dir(tmp_path):
    import os
    import time

    fresh = tmp_path / "task" / "runs" / "fresh"
    (fresh / ".hydra").mkdir(parents=True)
    (fresh / ".hydra" / "config.yaml").write_text("a: 1")
    assert discard_fresh_run_dir(fresh) and not (tmp_path / "task").exists()  # and its now empty parents
    old = tmp_path / "old"
    old.mkdir()
    (old / "train.log").write_text("an earlier attempt")
    past = time.time() - 3600
    os.utime(old / "train.log", (past, past))
    assert not discard_fresh_run_dir(old) and (old / "train.log").is_file()
    (tmp_path / "resumable" / "checkpoints").mkdir(parents=True)
    (tmp_path / "resumable" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert not discard_fresh_run_dir(tmp_path / "resumable")


def test_a_failed_start_makes_no_wandb_run(tmp_path):
    overrides = [*TINY[:-2], "logger=many", "data=cifar10", f"paths.data_dir={tmp_path / 'no_data'}"]
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        run_in_process(overrides, tmp_path / "run")
    assert not (tmp_path / "run" / "wandb").exists() and not (tmp_path / "run" / "wandb_id.txt").exists()


# --- a non-finite loss ---------------------------------------------------------------------
def test_a_nan_loss_stops_the_run_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from tasks.io.checkpoints import load_checkpoint

    poison = [
        "+callbacks.poison._target_=tests.tasks.faults.PoisonAt",
        "+callbacks.poison.epoch=1",
        "+callbacks.poison.batch=1",
    ]
    overrides = [
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "logger=csv",
        "trainer.enable_model_summary=false",
        "trainer.max_epochs=3",
        "export=false",
        "model.backbone.name=resnet10t",
        *poison,
    ]
    with pytest.raises(TrainingDiverged) as err:
        run_in_process(overrides, tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    message = str(err.value)
    assert message.startswith("Training diverged at step 3 (epoch 1): the loss became nan. Loss terms at that step: ")
    assert (
        f"The last good checkpoint is kept: {last} (step 2); continue from it with resume={last.parents[1]}" in message
    )
    assert "model.optimizer.lr" in message and "trainer.gradient_clip_val" in message
    state = load_checkpoint(last)
    weights = [v for v in state["state_dict"].values() if v.is_floating_point()]
    assert state["global_step"] == 2 and all(torch.isfinite(v).all() for v in weights)
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused(bad):
    from tasks.training.callbacks import FiniteLoss

    trainer = SimpleNamespace(
        global_step=7,
        current_epoch=1,
        callback_metrics={"train/loss": torch.tensor(float("inf"))},
        checkpoint_callback=None,
    )
    with pytest.raises(TrainingDiverged, match=r"step 7 \(epoch 1\): the weights are no longer finite \(\['net.w'\]\)"):
        FiniteLoss().on_save_checkpoint(
            trainer,
            None,
            {
                "state_dict": {
                    "net.a": torch.ones(3),
                    "net.w": torch.tensor([1.0, bad], dtype=torch.bfloat16),
                    "net.steps": torch.tensor([3]),
                }
            },
        )
    FiniteLoss().on_save_checkpoint(
        trainer, None, {"state_dict": {"net.a": torch.full((3,), 3e38), "net.n": torch.tensor(2)}}
    )
    FiniteLoss().on_save_checkpoint(trainer, None, {"state_dict": {}})


# --- nothing half-written -------------------------------------------------------------------
def test_an_interrupted_export_leaves_no_export_folder(tmp_path):
    from tasks.run.export import export_run

    class Exporter:
        def export_artifacts(self, folder: Path) -> dict:
            (folder / "model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_run(Exporter(), tmp_path / "export", {"task_name": "t"})
    assert list(tmp_path.iterdir()) == []


def test_a_finished_export_replaces_the_folder_and_points_inside_it(tmp_path):
    from tasks.run.export import export_run

    class Exporter:
        def export_artifacts(self, folder: Path) -> dict:
            (folder / "card.json").write_text(
                json.dumps({"kind": "toy", "format": 2, "load": f"load('{folder / 'card.json'}')"})
            )
            return {"card": str(folder / "card.json")}

    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "stale.txt").write_text("old")
    exports = export_run(Exporter(), tmp_path / "export", {"task_name": "t"})
    assert exports == {"card": str(tmp_path / "export" / "card.json")}
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["card.json"]  # one card: the module's
    card = tmp_path / "export" / "card.json"
    assert json.loads(card.read_text()) == {
        "kind": "toy",
        "format": 2,
        "load": f"load('{card}')",
        "run": {"task_name": "t"},
    }
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_a_checkpoint_write_that_fails_keeps_the_previous_file(tmp_path, monkeypatch):
    from tasks.training.checkpointing import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_write_text_replaces_whole_files_only(tmp_path, monkeypatch):
    target = files.write_text(tmp_path / "summary.json", '{"done": 1}')
    monkeypatch.setattr(files.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        files.write_text(target, '{"done": 2, "more": "x"}')
    assert target.read_text() == '{"done": 1}'


def test_files_read_json_names_a_truncated_file(tmp_path):
    path = tmp_path / "card.json"
    path.write_text('{"timm_name": "resnet18", "weights": "model.safe')
    with pytest.raises(UserError) as err:
        files.read_json(path, "Export card")
    assert str(err.value).startswith(f"Export card {path} is not valid JSON (it looks truncated): ")


def test_a_chain_checks_the_oracle_stage_before_anything_runs():
    """repfusion.oracle is a Hydra app: a chain's up-front check composes its stage too."""
    import sys

    from tasks.run.preflight import check_stage_commands

    check_stage_commands([[sys.executable, "-m", "repfusion.oracle", "distill.grid=[]"]])
    with pytest.raises(UserError, match="Did you mean 'distill.grid'"):
        check_stage_commands([[sys.executable, "-m", "repfusion.oracle", "distill.gridd=[]"]])


def test_a_discarded_run_dir_takes_its_job_log_handler_with_it(tmp_path):
    """A failed start removes its run dir; the job log's handler (Hydra attaches it to the root
    logger) must go too, or the next record of this process tries to reopen the vanished file."""
    import logging

    from tasks.run.boundary import discard_fresh_run_dir

    run = tmp_path / "run"
    run.mkdir()
    handler = logging.FileHandler(run / "job.log")
    keep = logging.FileHandler(tmp_path / "other.log")
    root = logging.getLogger()
    root.addHandler(handler)
    root.addHandler(keep)
    try:
        logging.getLogger("tasks").warning("before")
        assert discard_fresh_run_dir(run) and not run.exists()
        assert handler not in root.handlers and handler.stream is None and keep in root.handlers
        logging.getLogger("tasks").warning("after")  # would raise FileNotFoundError inside the handler
        assert not run.exists()
    finally:
        for h in (handler, keep):
            root.removeHandler(h)
            h.close()
