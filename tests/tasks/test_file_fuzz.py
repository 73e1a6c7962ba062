"""Every kind of file a user names, broken six ways (random bytes, truncated, empty, a folder,
a text file, a file of the wrong kind), read by the code that really reads it: one message
that names the file and what was wrong, exit code 2, no traceback."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tasks.run.boundary import run_guarded

VARIANTS = ("random", "truncated", "empty", "folder", "text", "wrong_kind")
TINY = {"channels": [8, 16, 32, 64], "stem_width": 8}


@dataclass
class Kind:
    """How to make a valid file of this kind, the wrong-kind stand-in, who reads it, and the
    words its message must hold per variant (the file's path is always required too)."""

    name: str
    filename: str
    make: Callable[[Path], None]
    wrong: Callable[[Path], None]
    read: Callable[[Path], object]
    expect: dict[str, str]


# --- valid files and their stand-ins -----------------------------------------------------------
def _net(num_classes: int = 0):
    from tasks.models.backbones import create_backbone

    torch.manual_seed(0)
    return create_backbone("resnet10t", num_classes=num_classes, **TINY)


def make_training_checkpoint(path: Path) -> None:
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in _net().state_dict().items()},
            "loops": {},
            "global_step": 3,
            "epoch": 0,
        },
        path,
    )


def make_safetensors(path: Path, num_classes: int = 0) -> None:
    save_file({k: v.contiguous() for k, v in _net(num_classes).state_dict().items()}, str(path))


def make_torch_state(path: Path) -> None:
    torch.save(_net().state_dict(), path)


def make_card(path: Path, num_classes: int = 0) -> None:
    from tasks.models.backbones import export_backbone

    exported = export_backbone(_net(num_classes), path.parent, name=path.stem)
    assert exported["card"] == str(path)


def make_json_summary(path: Path) -> None:
    path.write_text(json.dumps({"task_name": "classify_digits", "test": {"test/acc": 0.5}}))


def make_spec(path: Path) -> None:
    from dery.spec import FORMAT

    members = {
        "m": {"arch": "resnet10t", "kwargs": TINY, "weights": "random", "nodes": ["layer1", "layer2"], "layout": "nchw"}
    }
    path.write_text(
        __import__("yaml").safe_dump(
            {
                "format": FORMAT,
                "input_size": [3, 32, 32],
                "num_classes": 10,
                "members": members,
                "blocks": [{"member": "m", "nodes": ["layer1"]}],
                "stem": {"kind": "conv"},
                "adapters": [],
                "head": {"kind": "linear"},
                "params": 1,
                "flops": 1,
            },
            sort_keys=False,
        )
    )


def make_assembled(path: Path) -> None:
    from kf.assemble import assemble
    from kf.factor import FactorNetwork
    from kf.task_spec import build_tasks
    from tests.kf.conftest import TINY_NET

    specs = build_tasks([{"name": "low_high", "groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]}], {"label": 10})
    assemble(FactorNetwork(TINY_NET, TINY_NET, [s.num_classes for s in specs], feature_dim=0), specs).save(path.parent)


def make_stage_summary(path: Path, stage: str = "similarity") -> None:
    path.write_text(json.dumps({"stage": stage, "zoo": "zoo.json", "similarity": "similarity.safetensors"}))


def make_chain(path: Path) -> None:
    path.write_text(
        "stages:\n  a:\n    experiment: classify_digits\n    overrides: ['trainer.max_epochs=1']\n"
        "  b:\n    experiment: classify_digits\ncompare:\n  metric: test/acc\n"
    )


def make_idx(path: Path) -> None:
    import numpy as np

    data = np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28)
    path.write_bytes(bytes([0, 0, 8, 3]) + np.array([4, 28, 28], dtype=">i4").tobytes() + data.tobytes())


def make_unet_folder(folder: Path) -> None:
    from tests.repfusion.conftest import make_unet

    make_unet().save_pretrained(folder, safe_serialization=True)


# --- who reads them ----------------------------------------------------------------------------
def read_resume(path: Path):
    from tasks.io.checkpoints import load_training_checkpoint

    return load_training_checkpoint(path)


def read_init(path: Path):
    from tasks.models.backbones import create_backbone

    return create_backbone("resnet10t", init=str(path), **TINY)


def read_card(path: Path):
    from tasks.models.backbones import load_exported

    return load_exported(path)


def read_zoo_file(path: Path):
    from dery.zoo import load_model

    return load_model("m", "resnet10t", dict(TINY), f"file:{path}")


def read_zoo_run(path: Path):
    from dery.zoo import load_model

    return load_model("m", None, {}, f"run:{path.parents[1]}")


def read_kf_checkpoint(path: Path):
    from kf.teacher import TeacherSpec, load_teacher

    return load_teacher(TeacherSpec(source=str(path), arch="resnet10t", timm_kwargs=TINY), {"label": 10})


def read_kf_card(path: Path):
    from kf.teacher import TeacherSpec, load_teacher

    return load_teacher(TeacherSpec(source=str(path)), {"label": 10})


def read_spec(path: Path):
    from dery.spec import load_spec

    return load_spec(path)


def read_assembled(path: Path):
    from kf.assemble import load_assembled

    return load_assembled(path)


def read_stage_summary(path: Path):
    from dery.app import read_stage

    return read_stage(path.parent, "similarity", "python -m dery.similarity")


def read_chain(path: Path):
    from tasks.studies.chain import load_chain

    return load_chain(str(path))


def make_cifar_batch(path: Path) -> None:
    import pickle

    import numpy as np

    with open(path, "wb") as f:  # the CIFAR python archive's format: a dict holding a uint8 array
        pickle.dump({"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), "labels": [1, 2]}, f)


def read_cifar_batch(path: Path):
    from tasks.io.files import read_array_pickle

    return read_array_pickle(path, "CIFAR-10 batch")


def read_idx_file(path: Path):
    from tasks.data.idx import read_idx

    return read_idx(path)


def read_unet(path: Path):
    from repfusion.teacher import load_unet

    return load_unet(str(path.parent))


def make_png(path: Path) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)


def read_folder_image(path: Path):
    from tasks.data.folder import ImageList

    return ImageList([(path, 3)], lambda image: image)[0]


def read_report(path: Path):
    from tasks.studies.report import find_summaries

    return find_summaries([path.parent])  # kt-report is pointed at a run dir


def write_png(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))


WEIGHTS = {
    "random": "is not a safetensors or PyTorch checkpoint: it is a binary file of an unknown kind",
    "truncated": "is a truncated safetensors file",
    "empty": "is an empty file",
    "folder": "is a folder, not a file",
    "text": "is not a safetensors or PyTorch checkpoint: it is a text file",
    "wrong_kind": "is not a safetensors or PyTorch checkpoint: it is a JSON text file",
}
CARD = {
    "random": "not a text file",
    "truncated": "is not valid JSON (it looks truncated)",
    "empty": "is an empty file",
    "folder": "is a folder, not a file",
    "text": "is not valid JSON: Expecting value: line 1 column 1 (char 0); it is a text",
    "wrong_kind": "is not an export card of this project: it has no 'kind' (its keys: ['task_name', 'test'])",
}
KINDS = [
    Kind(
        "resume checkpoint",
        "last.ckpt",
        make_training_checkpoint,
        make_torch_state,
        read_resume,
        {
            "random": "is corrupt or not a PyTorch checkpoint: it is a binary file of an unknown kind",
            "truncated": "is corrupt or not a PyTorch checkpoint: it is a truncated or damaged zip archive",
            "empty": "is an empty file",
            "folder": "is a folder, not a file",
            "text": "is corrupt or not a PyTorch checkpoint: it is a text file",
            "wrong_kind": "is not a training checkpoint of this framework: it lacks ['state_dict', 'loops', "
            "'global_step']",
        },
    ),
    Kind("backbone init", "init.safetensors", make_safetensors, make_json_summary, read_init, WEIGHTS),
    Kind("zoo member file:", "member.safetensors", make_safetensors, make_json_summary, read_zoo_file, WEIGHTS),
    Kind(  # a teacher keeps its trained head: its weights are a 10-class classifier's
        "KF teacher checkpoint",
        "teacher.ckpt",
        lambda p: make_safetensors(p, 10),
        make_json_summary,
        read_kf_checkpoint,
        WEIGHTS,
    ),
    Kind("export card", "model.json", make_card, make_json_summary, read_card, CARD),
    Kind(
        "KF teacher card",
        "model.json",
        lambda p: make_card(p, 10),
        make_json_summary,
        read_kf_card,
        CARD,
    ),
    Kind(
        "zoo member run:",
        "run/export/model.json",
        make_card,
        make_json_summary,
        read_zoo_run,
        {**CARD, "folder": "no export card there", "wrong_kind": "is not the export of a timm classifier"},
    ),
    Kind(
        "teacher U-Net config",
        "unet/config.json",
        lambda p: make_unet_folder(p.parent),
        make_json_summary,
        read_unet,
        {
            **CARD,
            "folder": "has no config.json: it is not a diffusers UNet2DModel folder",
            "wrong_kind": "lacks the keys ['_class_name']",
        },
    ),
    Kind(
        "teacher U-Net weights",
        "unet/diffusion_pytorch_model.safetensors",
        lambda p: make_unet_folder(p.parent),
        make_torch_state,
        read_unet,
        {
            "random": "is named .safetensors but it is a binary file of an unknown kind",
            "truncated": "is a truncated safetensors",
            "empty": "is an empty file",
            "folder": "is a folder, not a file",
            "text": "is named .safetensors but it is a text file",
            "wrong_kind": "is named .safetensors but it is a zip archive (PyTorch's checkpoint format)",
        },
    ),
    Kind(
        "DeRy spec",
        "spec.yaml",
        make_spec,
        make_json_summary,
        read_spec,
        {
            "random": "not a text file",
            "truncated": "lacks the keys",
            "empty": "is an empty file",
            "folder": "is a folder, not a file",
            "text": "holds a str, not a mapping of keys",
            "wrong_kind": "is not a DeRy spec (format dery-spec/1)",
        },
    ),
    Kind("KF assembled card", "export/assembled.json", make_assembled, make_json_summary, read_assembled, CARD),
    Kind(
        "DeRy stage summary",
        "similarity/summary.json",
        make_stage_summary,
        lambda p: make_stage_summary(p, "partition"),
        read_stage_summary,
        {
            **CARD,
            "folder": "is missing). Make one with: python -m dery.similarity",
            "wrong_kind": "is a partition run, not a similarity run",
        },
    ),
    Kind(
        "chain file",
        "chain.yaml",
        make_chain,
        make_json_summary,
        read_chain,
        {
            "random": "not a text file",
            "truncated": "is not valid YAML",
            "empty": "is an empty file",
            "folder": "Unknown chain",
            "text": "holds a str, not a mapping of keys",
            "wrong_kind": "has no stages",
        },
    ),
    Kind(
        "IDX data file",
        "train-images-idx3-ubyte",
        make_idx,
        write_png,
        read_idx_file,
        {
            "random": "is not an IDX file (bad magic number feed",
            "truncated": "(truncated or padded)",
            "empty": "is not an IDX file (bad magic number empty)",
            "folder": "is not a readable IDX file",
            "text": "is not an IDX file (bad magic number",
            "wrong_kind": "is not an IDX file (bad magic number 89504e47)",
        },
    ),
    Kind(
        "CIFAR batch",
        "cifar-10-batches-py/data_batch_1",
        make_cifar_batch,
        write_png,
        read_cifar_batch,
        {
            "random": "is not a pickle of arrays: it is a binary file",
            "truncated": "is a corrupt or truncated pickle",
            "empty": "is an empty file",
            "folder": "is a folder, not a file",
            "text": "is not a pickle of arrays: it is a text file",
            "wrong_kind": "is not a pickle of arrays: it is a PNG image",
        },
    ),
    Kind(
        "image of an image folder",
        "train/cat/0001.png",
        make_png,
        make_json_summary,
        read_folder_image,
        {
            "random": "is not an image PIL can read: it is a binary file",
            "truncated": "is a truncated or damaged image",
            "empty": "is an empty file",
            "folder": "is a folder, not a file",
            "text": "is not an image PIL can read: it is a text file",
            "wrong_kind": "is not an image PIL can read: it is a JSON text file",
        },
    ),
    Kind(
        "kt-report summary",
        "run/summary.json",
        make_json_summary,
        lambda p: p.write_text("[1, 2]"),
        read_report,
        {**CARD, "wrong_kind": "holds a list, not a mapping of keys"},
    ),
]


def spoil(kind: Kind, variant: str, root: Path) -> Path:
    path = root / kind.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if (
        kind.name.startswith(("teacher U-Net", "KF assembled", "export card", "KF teacher card", "zoo member run"))
        or variant == "truncated"
    ):
        kind.make(path)  # the folder around the file is valid; the file itself is spoiled below
    if variant == "random":
        rng = random.Random(0)
        path.write_bytes(b"\xfe\xed" + bytes(rng.randrange(256) for _ in range(510)))
    elif variant == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif variant == "empty":
        path.write_bytes(b"")
    elif variant == "folder":
        if path.exists():
            path.unlink()
        path.mkdir()
    elif variant == "text":
        path.write_text("hello\nthis is a note, not the file you meant\n")
    else:
        kind.wrong(path)
    return path


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_a_spoiled_file_gives_one_message_naming_it_and_exit_code_2(kind, variant, tmp_path, capsys):
    path = spoil(kind, variant, tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_guarded("fuzz", kind.read, path)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "Traceback" not in err and err.count("\nerror: ") + err.startswith("error: ") == 1
    named = str(path)
    if (variant, kind.name) in (("folder", "teacher U-Net config"), ("wrong_kind", "DeRy stage summary")):
        named = str(path.parent)  # the reader names the folder the file belongs to
    elif (variant, kind.name) == ("folder", "zoo member run:"):
        named = str(path.parents[1])
    assert named in err, err
    assert kind.expect[variant] in err, err


def _first_weight(model) -> torch.Tensor:
    return model.state_dict()["conv1.0.weight"]


# What the unspoiled file of every kind reads as: the same reader accepts it, so the failures above are the file's.
CONTROLS = {
    "resume checkpoint": lambda out: out["global_step"] == 3 and "net.fc.weight" not in out["state_dict"],
    "backbone init": lambda out: torch.equal(_first_weight(out), _first_weight(_net())),
    "zoo member file:": lambda out: torch.equal(_first_weight(out[0]), _first_weight(_net())) and out[1] == "resnet10t",
    "KF teacher checkpoint": lambda out: torch.equal(_first_weight(out[0]), _first_weight(_net(10))),
    "export card": lambda out: torch.equal(_first_weight(out), _first_weight(_net())),
    "KF teacher card": lambda out: (
        torch.equal(_first_weight(out[0]), _first_weight(_net(10))) and out[1][0].name == "label"
    ),
    "zoo member run:": lambda out: torch.equal(_first_weight(out[0]), _first_weight(_net())) and out[1] == "resnet10t",
    "teacher U-Net config": lambda out: (
        type(out).__name__ == "UNet2DModel" and list(out.config.block_out_channels) == [16, 32, 64]
    ),
    "teacher U-Net weights": lambda out: type(out).__name__ == "UNet2DModel" and out.config.sample_size == 32,
    "DeRy spec": lambda out: out["format"] == "dery-spec/1" and list(out["members"]) == ["m"],
    "KF assembled card": lambda out: out.task_names == ["low_high"],
    "DeRy stage summary": lambda out: out["stage"] == "similarity",
    "chain file": lambda out: list(out.stages) == ["a", "b"],
    "IDX data file": lambda out: out.shape == (4, 28, 28) and int(out[0, 0, 5]) == 5,
    "image of an image folder": lambda out: out[0].size == (32, 32) and out[0].mode == "RGB" and out[1] == 3,
    "kt-report summary": lambda out: [s["test"]["test/acc"] for s in out] == [0.5],
    "CIFAR batch": lambda out: (
        out["labels"] == [1, 2] and out["data"].shape == (2, 3072) and int(out["data"][1, 0]) == 0
    ),
}


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_the_valid_file_of_every_kind_reads(kind, tmp_path):
    path = tmp_path / kind.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    kind.make(path)
    assert CONTROLS[kind.name](kind.read(path))
