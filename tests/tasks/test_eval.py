"""eval.py: a tiny classify_digits run, then eval.py on its export, its checkpoint and its run dir
gives back the run's own test metrics exactly; predict on PNGs gives the network's own argmax;
bad input is one message, exit 2, no traceback and no run dir. In-process through the same
guarded command the script runs (tasks.run.launch.run_command); one real command at the end."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from eval import main as eval_main
from tasks.run.launch import run_command
from tests.conftest import ROOT, TINY, read_summary
from tests.tasks.test_fashion import HAS_REAL

FULL_TEST = [o for o in TINY if not o.startswith("trainer.limit_test_batches")]  # the whole test split
JUNK = bytes(range(7, 256)) * 3


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 1-epoch classify_digits run, made by train.py's own command (so it has .hydra/ as on disk)."""
    from train import main as train_main

    run_dir = tmp_path_factory.mktemp("classify") / "run"
    run_command(train_main, "train", entry="train.py", argv=["train.py", *FULL_TEST, f"hydra.run.dir={run_dir}"])
    return run_dir


def _eval(args: list[str], out: Path) -> dict:
    run_command(eval_main, "eval", entry="eval.py", argv=["eval.py", *args, f"hydra.run.dir={out}"])
    return read_summary(out)


def _fails(capsys, args: list[str], out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "keep").touch()  # a failed start removes its run dir's parent too when it is left empty
    with pytest.raises(SystemExit) as exit_:
        run_command(eval_main, "eval", entry="eval.py", argv=["eval.py", *args, f"hydra.run.dir={out}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err, err
    assert not out.exists()  # nothing half-written: the failed start left no run dir
    return err


# --- test mode -----------------------------------------------------------------------------------
def test_the_export_gives_back_the_runs_own_test_metrics(run, tmp_path):
    trained = read_summary(run)["test"]
    summary = _eval([f"ckpt={run / 'export'}"], tmp_path / "on_its_data")  # the run's own data, from its run dir
    assert summary["test"] == trained and set(trained) == {"test/acc", "test/acc_top5", "test/loss"}
    assert summary["source"] == {
        "kind": "export",
        "path": str(run / "export" / "config.json"),
        "checkpoint": None,
        "run_dir": str(run),
    }
    card = _eval([f"ckpt={run / 'export' / 'config.json'}", "data=digits", "logger=csv"], tmp_path / "card")
    assert card["test"] == trained and card["data"] == "digits"
    with open(tmp_path / "card" / "metrics.csv", newline="") as handle:  # the logger got the same metrics
        (logged,) = [row for row in csv.DictReader(handle) if row.get("test/acc")]
    assert float(logged["test/acc"]) == pytest.approx(trained["test/acc"], rel=1e-6)
    log = (tmp_path / "card" / "eval.log").read_text()
    assert f"ckpt={run / 'export' / 'config.json'}: export" in log and "test/acc" in log
    assert (tmp_path / "card" / ".hydra" / "config.yaml").is_file()


def test_the_checkpoint_and_the_run_dir_give_back_the_runs_test_metrics(run, tmp_path):
    trained = read_summary(run)
    best = Path(trained["checkpoints"]["best"])
    summary = _eval([f"ckpt={best}", "data=digits"], tmp_path / "ckpt")
    assert summary["test"] == trained["test"]
    assert summary["source"]["checkpoint"] == str(best) and summary["source"]["run_dir"] == str(run)
    summary = _eval([f"ckpt={run}"], tmp_path / "run_dir")  # the run dir: its best checkpoint, its own data
    assert summary["test"] == trained["test"] and summary["source"]["checkpoint"] == str(best)


def test_an_export_whose_run_dir_is_gone_needs_data_and_is_normalised_as_its_card_says(run, tmp_path, capsys):
    export = tmp_path / "export"
    shutil.copytree(run / "export", export)
    card = json.loads((export / "config.json").read_text())
    card["run"]["run_dir"] = str(tmp_path / "gone")
    (export / "config.json").write_text(json.dumps(card))
    err = _fails(capsys, [f"ckpt={export}"], tmp_path / "no_data")
    assert "does not say which data it was trained on" in err and "data=<group>" in err
    assert _eval([f"ckpt={export}", "data=digits"], tmp_path / "digits")["test"] == read_summary(run)["test"]
    # The card's normalisation is what the network sees, not the data config's own.
    card["pretrained_cfg"]["mean"], card["pretrained_cfg"]["std"] = [0.0] * 3, [1.0] * 3
    (export / "config.json").write_text(json.dumps(card))
    other = _eval([f"ckpt={export}", "data=digits"], tmp_path / "other_norm")["test"]
    assert other["test/loss"] != read_summary(run)["test"]["test/loss"]


def write_old_card(config: Path, card: Path) -> None:
    """The card of the old layout (no longer written) for the weights beside a timm config.json."""
    hub = json.loads(config.read_text())
    kwargs = {"num_classes": hub["num_classes"], **(hub.get("model_args") or {})}
    card.write_text(
        json.dumps({"timm_name": hub["architecture"], "timm_kwargs": kwargs, "weights": "model.safetensors"})
    )


def test_an_old_layout_export_is_normalised_as_its_run_was(run, tmp_path, capsys):
    """model.json + model.safetensors, the run's fields in a second card.json: the card holds no
    normalisation, so the run's data config gives it (not timm's ImageNet default)."""
    old = tmp_path / "old_export"
    old.mkdir()
    shutil.copy(run / "export" / "model.safetensors", old / "model.safetensors")
    write_old_card(run / "export" / "config.json", old / "model.json")
    (old / "card.json").write_text(json.dumps({"task_name": "classify_digits", "run_dir": str(run)}))
    summary = _eval([f"ckpt={old}", "data=digits"], tmp_path / "eval")
    assert summary["test"] == read_summary(run)["test"] and summary["source"]["path"] == str(old / "model.json")
    (old / "card.json").unlink()  # now nothing says how it was normalised
    _digit_pngs(tmp_path / "pngs", n=2)
    err = _fails(capsys, [f"ckpt={old}", "mode=predict", f"data_dir={tmp_path / 'pngs'}"], tmp_path / "runs" / "p")
    assert f"{old / 'model.json'} is an old-layout card without its normalisation, and its run dir is gone" in err


@pytest.mark.skipif(not HAS_REAL, reason="Fashion-MNIST not installed (make fashion)")
def test_a_classify_fashion_export_gives_back_its_test_metrics(tmp_path):
    """The Fashion-MNIST anchor's recipe (small-input-stem ResNet-18, registered in timm by
    tasks.models.backbones); two test batches of the official test set on both sides."""
    from train import main as train_main

    run_dir = tmp_path / "fashion"
    limits = [
        *FULL_TEST,
        "experiment=classify_fashion",
        "data.train_subset=100",
        "data.batch_size=32",
        "trainer.limit_test_batches=2",
    ]
    run_command(train_main, "train", entry="train.py", argv=["train.py", *limits, f"hydra.run.dir={run_dir}"])
    card = json.loads((run_dir / "export" / "config.json").read_text())
    assert card["architecture"] == "resnet18_smallstem"
    summary = _eval(
        [f"ckpt={run_dir / 'export'}", "data=fashion_mnist", "data.batch_size=32", "trainer.limit_test_batches=2"],
        tmp_path / "eval",
    )
    assert summary["test"] == read_summary(run_dir)["test"] and summary["data"] == "fashion_mnist"


def test_a_run_whose_data_is_not_here_tests_on_data_but_cannot_predict(run, tmp_path, capsys):
    moved = tmp_path / "moved_run"
    shutil.copytree(run, moved)
    config = (moved / ".hydra" / "config.yaml").read_text()
    (moved / ".hydra" / "config.yaml").write_text(config.replace("tasks.data.DigitsDataModule", "tasks.data.Gone", 1))
    assert _eval([f"ckpt={moved}", "data=digits"], tmp_path / "test")["test"] == read_summary(run)["test"]
    _digit_pngs(tmp_path / "pngs", n=2)
    err = _fails(capsys, [f"ckpt={moved}", "mode=predict", f"data_dir={tmp_path / 'pngs'}"], tmp_path / "runs" / "p")
    assert "The preprocessing of this network is unknown: the run's data config cannot be built here" in err
    assert "ckpt=<run dir>/export" in err


@pytest.mark.slow
def test_a_kf_run_dir_gives_back_its_own_test_metrics(run, tmp_path):
    """The checkpoint route rebuilds any LightningModule from its run's config: a KF run (teacher
    = the classify run's export) and all its test metrics (probes, DCI, subsets) come back exactly."""
    from train import main as train_main

    kf = tmp_path / "kf"
    argv = [
        "train.py",
        *FULL_TEST,
        "experiment=kf_digits",
        f"model.teacher.source={run / 'export'}",
        f"hydra.run.dir={kf}",
    ]
    run_command(train_main, "train", entry="train.py", argv=argv)
    summary = _eval([f"ckpt={kf}"], tmp_path / "eval")
    assert summary["test"] == read_summary(kf)["test"] and len(summary["test"]) > 10


# --- predict mode ----------------------------------------------------------------------------------
def _digit_pngs(folder: Path, n: int = 12) -> tuple[list[Path], torch.Tensor]:
    """The first `n` digits as 32x32 PNGs (two sub-folders) and the [0, 1] images they decode to."""
    from tasks.data.digits import load_digit_images

    images = (load_digit_images(32)[0][:n] * 255).round().to(torch.uint8)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"part{i % 2}" / f"digit{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    (folder / "notes.txt").write_text("not an image: skipped\n")
    return paths, images.float() / 255


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "predictions.csv", newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def test_predict_gives_the_networks_own_argmax_on_the_images(run, tmp_path):
    from tasks.data.digits import DigitsDataModule
    from tasks.io.cards import load_card

    paths, images = _digit_pngs(tmp_path / "pngs")
    net = load_card(run / "export").eval()
    mean, std = (torch.tensor(stats).view(1, 3, 1, 1) for stats in (DigitsDataModule.mean, DigitsDataModule.std))
    with torch.no_grad():
        probs = torch.softmax(net((images - mean) / std), dim=1)
    top_p, top_i = probs.topk(5, dim=1)
    for source in (run / "export", run):  # the export, and the run dir's checkpoint
        out = tmp_path / f"predict_{source.name}"
        summary = _eval([f"ckpt={source}", "mode=predict", f"data_dir={tmp_path / 'pngs'}"], out)
        assert summary["images"] == len(paths) and summary["predictions"] == str(out / "predictions.csv")
        rows = _rows(out)
        assert sorted(rows) == sorted(p.relative_to(tmp_path / "pngs").as_posix() for p in paths)
        for path, p, i in zip(paths, top_p.tolist(), top_i.tolist()):
            row = rows[path.relative_to(tmp_path / "pngs").as_posix()]
            assert int(row["class_index"]) == i[0] and row["top5_classes"] == " ".join(map(str, i))
            assert float(row["probability"]) == pytest.approx(p[0], abs=2e-6)
            assert "class_name" not in row  # the digits card has no class names


def test_predict_names_the_classes_when_the_card_has_names(run, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(run / "export", export)
    card = json.loads((export / "config.json").read_text())
    names = [f"digit {i}" for i in range(10)]
    (export / "config.json").write_text(json.dumps({**card, "label_names": names}))
    _digit_pngs(tmp_path / "pngs", n=4)
    rows = _rows(
        Path(
            _eval([f"ckpt={export}", "mode=predict", f"data_dir={tmp_path / 'pngs'}", "top_k=3"], tmp_path / "out")[
                "run_dir"
            ]
        )
    )
    assert all(row["class_name"] == names[int(row["class_index"])] for row in rows.values())
    assert all(len(row["top3_classes"].split()) == 3 for row in rows.values())


# --- bad input ---------------------------------------------------------------------------------------
def test_missing_and_garbage_ckpt_are_one_message(run, tmp_path, capsys):
    out = tmp_path / "out"
    err = _fails(capsys, [f"ckpt={tmp_path / 'nowhere'}"], out)
    assert f"ckpt={tmp_path / 'nowhere'}: nothing there" in err and "Point ckpt= at an export folder" in err
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(JUNK)
    assert f"{junk} is a binary file of an unknown kind, not a checkpoint" in _fails(capsys, [f"ckpt={junk}"], out)
    evil = run / "checkpoints" / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": subprocess.Popen}, evil)  # a global that would be imported
    try:
        assert "pickled Python objects" in _fails(capsys, [f"ckpt={evil}"], out)
    finally:
        evil.unlink()
    lone = tmp_path / "lone.ckpt"
    shutil.copy(read_summary(run)["checkpoints"]["best"], lone)
    assert "has no run dir around it" in _fails(capsys, [f"ckpt={lone}"], out)
    assert "'ckpt' must be set" in _fails(capsys, [], out)


def test_unknown_data_kinds_and_modes_are_one_message(run, tmp_path, capsys):
    out = tmp_path / "out"
    err = _fails(capsys, [f"ckpt={run / 'export'}", "data=digitz"], out)
    assert "Could not find 'data/digitz'" in err and "fashion_mnist" in err
    err = _fails(capsys, [f"ckpt={run / 'export'}", "mode=predcit"], out)
    assert "mode='predcit' (a string) is not a valid choice: EvalRun(mode) expects one of ['test', 'predict']" in err
    other = tmp_path / "dery_export"
    other.mkdir()
    (other / "card.json").write_text(json.dumps({"kind": "dery_reassembled", "format": 2}))
    err = _fails(capsys, [f"ckpt={other}"], out)
    assert "is an export of kind 'dery_reassembled'; eval.py evaluates classifier exports (kinds ['timm'])" in err
    from tasks.models.backbones import create_backbone, export_timm

    export_timm(create_backbone("resnet18", num_classes=0), tmp_path / "backbone")
    err = _fails(capsys, [f"ckpt={tmp_path / 'backbone'}"], out)
    assert "is a backbone export without a classifier head (num_classes=0)" in err


def test_predict_on_an_empty_or_broken_folder_is_one_message(run, tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    err = _fails(capsys, [f"ckpt={run / 'export'}", "mode=predict", f"data_dir={tmp_path / 'empty'}"], out)
    assert f"Image folder {tmp_path / 'empty'} holds no image" in err and "['notes.txt']" in err
    assert "needs the folder of images: data_dir=" in _fails(capsys, [f"ckpt={run / 'export'}", "mode=predict"], out)
    paths, _ = _digit_pngs(tmp_path / "pngs", n=3)
    paths[1].write_bytes(JUNK)
    err = _fails(capsys, [f"ckpt={run / 'export'}", "mode=predict", f"data_dir={tmp_path / 'pngs'}"], out)
    assert f"Image {paths[1]} is not an image PIL can read" in err


def _command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_eval_as_a_command(run, tmp_path):
    result = _command(f"ckpt={run / 'export'}", f"hydra.run.dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_summary(tmp_path / "out")["test"] == read_summary(run)["test"]
    result = _command(f"ckpt={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'bad'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "nothing there" in result.stderr
    assert not (tmp_path / "bad").exists()
