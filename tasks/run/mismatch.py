"""Mistakes that surface only inside the network. Data and network that disagree on the image
size, the channel count or the class count fail at the first batch, deep in a layer (timm's
patch embedding, the first convolution, the loss). `explain` turns such a failure into one
UserError that names both sides and the keys that fix them, but only when the data and the
network really disagree on that quantity: any other failure, however it looks, stays a bug."""

from __future__ import annotations

import re
from typing import Any

import torch
from omegaconf import DictConfig

from tasks.errors import UserError

_SIZE = re.compile(  # timm's patch embedding
    r"Input (height|width) \((\d+)\) (?:doesn't match model \((\d+)\)|should be divisible by patch size)"
)
_CHANNELS = re.compile(r"expected input\[[\d, ]+\] to have (\d+) channels, but got (\d+) channels instead")
_CLASSES = re.compile(  # cross-entropy on the CPU, timm's one-hot targets, the same on a GPU
    r"Target (-?\d+) is out of bounds|Class values must be smaller than num_classes|device-side assert"
)


def data_shape(datamodule: Any) -> dict[str, Any]:
    """What the data declares: image size (an int or (h, w)), channels, classes."""
    size = getattr(datamodule, "image_size", None)
    channels = getattr(datamodule, "channels", None) or len(getattr(datamodule, "mean", ()) or ()) or None
    return {"size": size, "channels": channels, "classes": getattr(datamodule, "num_classes", None) or None}


def _side(size: Any) -> tuple[int, int] | None:
    if isinstance(size, int):
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def _failing_module(err: BaseException, model: Any) -> tuple[str, Any] | None:
    """(qualified name, module) of the innermost layer of `model` the traceback passes through."""
    if not isinstance(model, torch.nn.Module):
        return None
    names = {id(m): n for n, m in model.named_modules()}
    found, tb = None, err.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, torch.nn.Module) and id(owner) in names:
            found = (names[id(owner)], owner)
        tb = tb.tb_next
    return found


def backbone_nodes(cfg: DictConfig | None) -> list[tuple[str, DictConfig]]:
    """(key, node) of every timm backbone under `model` (a node with a string `name`)."""
    model = cfg.get("model") if cfg is not None else None
    found = []

    def walk(node: Any, key: str) -> None:
        if not isinstance(node, DictConfig):
            return
        if isinstance(node.get("name", None), str) and "_target_" not in node:
            found.append((key, node))
        for child in node.keys():
            if not str(child).startswith("_"):
                walk(node.get(child), f"{key}.{child}")

    walk(model, "model")
    return found


def _set(key: str, node: DictConfig, leaf: str, value: Any) -> str:
    return f"{'' if leaf in node else '+'}{key}.{leaf}={value}"


def _data_key(cfg: DictConfig | None, leaf: str, value: Any) -> str | None:
    data = cfg.get("data") if cfg is not None else None
    return f"data.{leaf}={value}" if isinstance(data, DictConfig) and leaf in data else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _network_classes(model: Any) -> int | None:
    hparams = getattr(model, "hparams", None) or {}
    value = hparams.get("num_classes") if hasattr(hparams, "get") else None
    return int(value) if isinstance(value, int) else None


def explain(err: BaseException, datamodule: Any, model: Any, cfg: DictConfig | None = None) -> UserError | None:
    """The UserError a data/network disagreement behind `err` is, or None (then `err` stays a bug)."""
    text = str(err)
    data = data_shape(datamodule)
    layer = _failing_module(err, model)
    where = f" ({layer[0]}: {_first_line(err)})" if layer else f" ({_first_line(err)})"
    backbones = backbone_nodes(cfg)
    size = _SIZE.search(text)
    sides = _side(data["size"])
    if size and sides is not None:
        given = int(size.group(2))
        expected = int(size.group(3)) if size.group(3) else None
        if given == sides[0 if size.group(1) == "height" else 1] and expected != given:
            fixes = [_set(k, n, "img_size", data["size"]) for k, n in backbones]
            if expected is not None and (key := _data_key(cfg, "image_size", expected)):
                fixes.append(key)
            wants = f"{expected}x{expected}" if expected is not None else "a multiple of its patch size"
            return UserError(
                f"The data and the network disagree on the image size: the data gives {sides[0]}x{sides[1]} "
                f"images but the network expects {wants}{where}. "
                + (f"Make them agree: set {' or '.join(fixes)}." if fixes else "Give the network data of its size.")
            )
    channels = _CHANNELS.search(text)
    if channels and data["channels"]:
        expected, given = int(channels.group(1)), int(channels.group(2))
        if given == data["channels"] and expected != given:
            fixes = [_set(k, n, "in_chans", given) for k, n in backbones]
            if key := _data_key(cfg, "channels", expected):
                fixes.append(key)
            return UserError(
                f"The data and the network disagree on the channel count: the data gives {given}-channel images "
                f"but the network's layer takes {expected}{where}. "
                + (f"Make them agree: set {' or '.join(fixes)}." if fixes else "Give the network data it takes.")
            )
    classes = _CLASSES.search(text)
    predicted = _network_classes(model)
    if classes and data["classes"] and predicted and data["classes"] > predicted:
        model_node = cfg.get("model") if cfg is not None else None
        fix = (
            f"Set model.num_classes={data['classes']}."
            if isinstance(model_node, DictConfig) and "num_classes" in model_node
            else "Use data with the network's classes."
        )
        return UserError(f"The data has {data['classes']} classes but the network predicts {predicted}{where}. {fix}")
    return None
