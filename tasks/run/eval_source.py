"""What `ckpt=` of eval.py names, as a LightningModule to test or predict with:
- an export (its folder, or the card inside it; either layout): tasks.io.cards.load_card rebuilds
  the network, ClassificationModule's own test step measures it;
- a run dir or a Lightning .ckpt inside one: the run's saved .hydra/config.yaml builds its
  LightningModule and Lightning loads the checkpoint into it (weights only: nothing pickled runs).
Each source also says which preprocessing its network expects (mean, std, input size) and the
names of its classes, when known."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from tasks.errors import UserError
from tasks.io import cards, files
from tasks.models.classification import ClassificationModule

log = logging.getLogger(__name__)
EVAL_KINDS = (cards.TIMM,)  # card kinds eval.py rebuilds: timm networks with a classifier head
SAVED_CONFIG = Path(".hydra") / "config.yaml"
WHAT = "an export folder (<run dir>/export) or its card, a run dir, or a Lightning .ckpt inside a run dir"


@dataclass
class Source:
    """A resolved `ckpt=`: the module to run, the checkpoint Lightning loads into it (None for an
    export, whose network is already built), and what its network expects."""

    kind: str  # "export" or "checkpoint"
    path: Path  # the card or the checkpoint file
    module: pl.LightningModule
    checkpoint: Path | None = None
    run_dir: Path | None = None  # the run that made it, when it is known and still there
    run_config: DictConfig | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)  # timm's data config: mean, std, input_size, ...
    class_names: list[str] | None = None

    def describe(self) -> dict[str, Any]:
        def text(path: Path | None) -> str | None:
            return str(path) if path else None

        return {
            "kind": self.kind,
            "path": str(self.path),
            "checkpoint": text(self.checkpoint),
            "run_dir": text(self.run_dir),
        }


class ExportClassifier(pl.LightningModule):
    """A network rebuilt from its export, measured by ClassificationModule's own test step (the
    same metrics, keys and loss as the run's test)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        n = int(net.num_classes)
        self.metrics = torch.nn.ModuleDict(
            {
                f"test_{name}": MulticlassAccuracy(n, top_k=k, average="micro")
                for name, k in (("acc", 1), ("acc_top5", min(5, n)))
            }
        )
        self.test_loss = MeanMetric()

    forward = ClassificationModule.forward
    evaluated_net = property(lambda self: self.net)  # an export is already the network to measure (EMA included)
    _evaluate = ClassificationModule._evaluate
    test_step = ClassificationModule.test_step


# --- resolving ckpt= ---------------------------------------------------------------------------
def resolve(ckpt: str) -> Source:
    """The Source of `ckpt=`; one message when the path is missing or holds none of what eval takes."""
    path = Path(str(ckpt)).expanduser()
    if not path.exists():
        raise UserError(f"ckpt={ckpt}: nothing there ({path} does not exist). Point ckpt= at {WHAT}.")
    if path.is_dir():
        if (path / SAVED_CONFIG).is_file():
            return from_checkpoint(run_checkpoint(path))
        return from_export(path)
    if path.suffix == ".json":
        return from_export(path)
    kind = files.what_is(path)
    if kind.startswith(("a zip archive (PyTorch", "a Python pickle")):
        return from_checkpoint(path)
    if kind == "a safetensors file" and cards.cards_in(path.parent):
        return from_export(path.parent)  # the export's weight file: its card is beside it
    raise UserError(f"ckpt={ckpt}: {path} is {kind}, not a checkpoint or an export card. Point ckpt= at {WHAT}.")


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of a run dir that its own test measured (summary.json's best), else last.ckpt."""
    folder = run_dir / "checkpoints"
    summary = run_dir / "summary.json"
    if summary.is_file():
        best = (files.read_json(summary, "Run summary").get("checkpoints") or {}).get("best")
        if best and (folder / Path(best).name).is_file():  # by name: the run dir may have moved
            return folder / Path(best).name
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    found = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if len(found) == 1:
        return found[0]
    held = f"several checkpoints {[p.name for p in found]}" if found else "no checkpoint"
    raise UserError(
        f"Run dir {run_dir} has {held} under checkpoints/. Point ckpt= at one .ckpt, or at the run's export/ folder."
    )


def _run_dir_of(checkpoint: Path) -> Path | None:
    for folder in (checkpoint.parent.parent, checkpoint.parent):  # <run>/checkpoints/x.ckpt, or <run>/x.ckpt
        if (folder / SAVED_CONFIG).is_file():
            return folder
    return None


def saved_config(run_dir: Path) -> DictConfig:
    """A run's composed config as it saved it (read as plain YAML; interpolations resolve later)."""
    return OmegaConf.create(
        files.read_yaml(
            run_dir / SAVED_CONFIG,
            "Saved run config",
            "The run dir is incomplete; evaluate its export/ folder instead.",
        )
    )


def from_export(path: Path) -> Source:
    card = cards.read_card(path)
    if card.kind not in EVAL_KINDS:
        run_dir = card.run.get("run_dir") or "<its run dir>"
        raise UserError(
            f"ckpt={path} is an export of kind '{card.kind}'; eval.py evaluates classifier exports "
            f"(kinds {list(EVAL_KINDS)}) and run checkpoints. Evaluate this run through its checkpoint: "
            f"ckpt={run_dir}."
        )
    net = cards.load_card(card)
    if not getattr(net, "num_classes", 0):
        raise UserError(
            f"ckpt={path} is a backbone export without a classifier head (num_classes=0); eval.py "
            "measures classifiers. Fine-tune it first: python train.py model.backbone.init=<export>."
        )
    run_dir = Path(card.run["run_dir"]) if card.run.get("run_dir") else None
    run_dir = run_dir if run_dir is not None and (run_dir / SAVED_CONFIG).is_file() else None
    config = saved_config(run_dir) if run_dir else None
    module = ExportClassifier(net.eval())
    data = card.fields.get("data") or {}
    if not card.legacy:
        from timm.data import resolve_model_data_config

        preprocessing = dict(resolve_model_data_config(net))  # the pretrained_cfg the export wrote
    elif "mean" in data:
        preprocessing = _preprocessing(data, module)
    elif config is not None:  # an old-layout card without its data: the run's data config has it
        preprocessing = _run_preprocessing(config, module)
    else:
        preprocessing = {
            "unknown": f"{card.path} is an old-layout card without its normalisation, and its run dir is gone"
        }
    names = card.fields.get("label_names") or data.get("label_names")
    return Source(
        "export",
        card.path,
        module,
        run_dir=run_dir,
        run_config=config,
        preprocessing=preprocessing,
        class_names=list(names) if names and len(names) == net.num_classes else None,
    )


def from_checkpoint(path: Path) -> Source:
    from pytorch_lightning.utilities.model_helpers import is_overridden

    from tasks.io.checkpoints import load_checkpoint
    from tasks.run.instantiate import build

    blob = load_checkpoint(path)  # weights only: a file that needs pickled code is refused here
    if "state_dict" not in blob:
        raise UserError(
            f"ckpt={path} is not a Lightning checkpoint: it has no state_dict (it holds "
            f"{sorted(blob)[:10]}). Point ckpt= at {WHAT}."
        )
    run_dir = _run_dir_of(path)
    if run_dir is None:
        raise UserError(
            f"ckpt={path} has no run dir around it (no {SAVED_CONFIG} beside checkpoints/): eval.py "
            "rebuilds a checkpoint's module from its run's config. Keep the checkpoint in its run dir, "
            "or evaluate the run's export/ folder."
        )
    config = saved_config(run_dir)
    model_node = config.get("model")
    if not isinstance(model_node, DictConfig) or "_target_" not in model_node:
        raise UserError(f"The saved config {run_dir / SAVED_CONFIG} has no model with a _target_ to rebuild.")
    if OmegaConf.select(model_node, "backbone.init", default=None) is not None:
        with open_dict(model_node):
            model_node.backbone.init = None  # the checkpoint replaces every weight: the init file is not read
    module = build("model", model_node)
    if not is_overridden("test_step", module):
        raise UserError(
            f"The run's module {model_node._target_} has no test step, so eval.py cannot measure it. "
            "Evaluate a run that trains a classifier, or its export."
        )
    return Source(
        "checkpoint",
        path,
        module,
        checkpoint=path,
        run_dir=run_dir,
        run_config=config,
        preprocessing=_run_preprocessing(config, module),
    )


def _run_preprocessing(config: DictConfig, module: pl.LightningModule) -> dict[str, Any]:
    """What the run's export would write into pretrained_cfg: its data's mean, std and input size."""
    from tasks.io.cards import data_config
    from tasks.run.instantiate import build

    try:
        data = data_config(build("data", config.data)) if config.get("data") is not None else {}
    except UserError as err:  # the run's data is not on this machine: a test on data= still runs
        return {"unknown": f"the run's data config cannot be built here ({str(err).splitlines()[0]})"}
    return _preprocessing(data, module)


def _preprocessing(data: dict[str, Any], module: pl.LightningModule) -> dict[str, Any]:
    """timm's data config from a card's data fields (tasks.io.cards.data_config): the whole image
    (crop_pct 1, as tasks.io.cards.apply_data writes it) and the network's own interpolation."""
    net_cfg = getattr(getattr(module, "net", None), "pretrained_cfg", None) or {}
    out = {"interpolation": net_cfg.get("interpolation", "bilinear"), "crop_pct": 1.0, "crop_mode": "center"}
    if "mean" in data:
        out.update(mean=tuple(data["mean"]), std=tuple(data["std"]))
    if "input_size" in data and "mean" in data:
        out["input_size"] = tuple(data["input_size"])
    else:
        out["unknown"] = "the run's data publishes no normalisation and input size"
    return out


# --- the data to test on ---------------------------------------------------------------------
def data_node(cfg: DictConfig, source: Source) -> DictConfig:
    """The data config to test on: `data=` of the command line, else the run's own; its
    normalisation, input size and channels set to what the network expects."""
    node = cfg.get("data")
    if node is None:
        if source.run_config is None or source.run_config.get("data") is None:
            raise UserError(
                f"ckpt={source.path} does not say which data it was trained on (its run dir is gone). "
                "Name the data to test on: data=<group> (e.g. data=digits, data=fashion_mnist)."
            )
        node = _resolved_in(source.run_config, "data")
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    pre = source.preprocessing
    if "unknown" in pre:
        log.warning("The network's own normalisation is unknown (%s): the data config's is used.", pre["unknown"])
    with open_dict(node):
        if "mean" in pre:
            node.mean, node.std = [float(v) for v in pre["mean"]], [float(v) for v in pre["std"]]
        size = pre.get("input_size")
        if size:
            if "in_chans" in node:
                node.in_chans = int(size[0])
            if "image_size" in node and size[1] == size[2]:
                node.image_size = int(size[1])
    return node


def _resolved_in(config: DictConfig, key: str) -> DictConfig:
    try:
        return OmegaConf.create(OmegaConf.to_container(config[key], resolve=True))
    except OmegaConfBaseException as err:  # an interpolation of the old run that no longer resolves
        raise UserError(
            f"The run's saved '{key}' config cannot be resolved ({str(err).splitlines()[0]}). "
            f"Name the data to test on: data=<group>."
        ) from None
