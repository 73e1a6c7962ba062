"""The model zoo: members declared in config (a timm architecture plus its weights), loaded
without running pickled code, and dissected into atomic nodes with their input and output
shapes and parameter counts.

A member's `weights` is one of (the forms of tasks.distill.teacher_source that name a timm network)
    run:<run dir>       a run of this project (its export: config.json + model.safetensors)
    file:<path>         a local .safetensors (or a tensors-only .pt/.pth/.ckpt) for `arch`
    hub:<timm tag>      timm's hub weights (needs the network), e.g. hub:resnet50.tv_in1k
    random              random init (tests, benchmarks)
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from dery.flops import count_flops
from dery.layout import channels, grid
from dery.nodes import family_of, find_nodes
from tasks.distill.teacher_source import load_timm_teacher, parse_source
from tasks.errors import UserError
from tasks.io.cards import LEGACY_NAMES, TIMM_CONFIG, read_card
from tasks.io.files import read_json
from tasks.models.backbones import count_parameters, create_backbone
from tasks.run.summary import finished

WEIGHT_FORMS = "run:<run dir>, file:<path>, hub:<timm tag> or random"
ZOO_MEMBER = "dery.schemas.ZooMember"


@dataclass
class Member:
    """One dissected zoo member; `model` is in eval mode."""

    name: str
    model: nn.Module
    arch: str
    kwargs: dict[str, Any]
    weights: str
    fingerprint: str
    nodes: list[str]
    layout: str
    in_shapes: list[tuple[int, ...]] = field(default_factory=list)
    out_shapes: list[tuple[int, ...]] = field(default_factory=list)
    node_params: list[int] = field(default_factory=list)
    flops: int = 0  # of the whole member, one image
    prefix_tokens: int = 0
    accuracy: float | None = None
    family: str | None = None

    def node(self, index: int) -> nn.Module:
        return self.model.get_submodule(self.nodes[index])

    def in_channels(self, index: int) -> int:
        return channels(self.in_shapes[index], self.layout)

    def out_channels(self, index: int) -> int:
        return channels(self.out_shapes[index], self.layout)

    def in_grid(self, index: int) -> tuple[int, int]:
        return grid(self.in_shapes[index], self.layout, self.prefix_tokens)

    def out_grid(self, index: int) -> tuple[int, int]:
        return grid(self.out_shapes[index], self.layout, self.prefix_tokens)

    def source(self) -> dict[str, Any]:
        """What rebuilds this member: architecture, kwargs, weights, nodes (JSON-able)."""
        return {
            "arch": self.arch,
            "kwargs": self.kwargs,
            "weights": self.weights,
            "nodes": self.nodes,
            "layout": self.layout,
        }

    def describe(self) -> dict[str, Any]:
        return {
            **self.source(),
            "family": self.family,
            "fingerprint": self.fingerprint,
            "in_shapes": [list(s) for s in self.in_shapes],
            "out_shapes": [list(s) for s in self.out_shapes],
            "node_params": self.node_params,
            "prefix_tokens": self.prefix_tokens,
            "accuracy": self.accuracy,
            "params": count_parameters(self.model),
            "flops": self.flops,
        }


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _run_accuracy(run_dir: Path) -> float | None:
    summary = run_dir / "summary.json"
    if finished(run_dir):
        value = read_json(summary, "Zoo member run summary").get("test", {}).get("test/acc")
        return float(value) if value is not None else None
    return None


def load_model(
    name: str, arch: str | None, kwargs: dict[str, Any], weights: str, random_seed: int | None = None
) -> tuple[nn.Module, str, dict, str, float | None]:
    """(model in eval mode, arch, kwargs, weight fingerprint, accuracy from a run's summary).
    `random` weights are drawn from the member's name (and `random_seed` when given)."""
    kind, _, where = str(weights).partition(":")
    accuracy = None
    if kind not in ("run", "file", "hub", "random"):
        raise UserError(f"Zoo member '{name}': unknown weights '{weights}'. Use {WEIGHT_FORMS}.")
    if kind in ("file", "random") and not arch:
        raise UserError(f"Zoo member '{name}': weights '{weights}' needs arch: <timm name>.")
    if kind == "run":
        run_dir = Path(where).expanduser()
        export = run_dir / "export"
        named = [export / n for n in (TIMM_CONFIG, *LEGACY_NAMES) if (export / n).is_file()]
        if not named:
            raise UserError(
                f"Zoo weights 'run:{run_dir}': no export card there (export/config.json). Train the member first "
                f"(python train.py experiment=dery_zoo_digits ...) or point to its run dir."
            )
        fields = read_json(named[0], "Zoo member card")
        if "architecture" not in fields and "timm_name" not in fields:
            raise UserError(
                f"Zoo weights 'run:{run_dir}': {named[0]} is not the export of a timm classifier "
                "(a zoo member is a run of e.g. experiment=dery_zoo_digits)."
            )
        card = read_card(named[0])
        model = load_timm_teacher(parse_source(str(weights)))
        arch, kwargs = model.kt_spec["timm_name"], model.kt_spec["timm_kwargs"]
        fingerprint = file_digest(card.weights())
        accuracy = _run_accuracy(run_dir)
    elif kind == "file":
        extra = dict(kwargs)
        model = load_timm_teacher(
            parse_source(weights), arch=arch, num_classes=extra.pop("num_classes", None), strict_head=False, **extra
        )
        fingerprint = file_digest(Path(where).expanduser())
    elif kind == "hub":
        tag = where or arch
        model = load_timm_teacher(parse_source(f"hub:{tag}"), **kwargs)
        arch, fingerprint = tag, f"hub:{tag}"
    else:
        with torch.random.fork_rng():  # the same weights for a name, the caller's RNG untouched
            torch.manual_seed(zlib.crc32((name if random_seed is None else f"{name}:{random_seed}").encode()))
            model = create_backbone(arch, **kwargs)
        fingerprint = f"random:{name}"
    return model.eval(), arch, dict(kwargs), fingerprint, accuracy


def check_input_size(name: str, arch: str, model: nn.Module, input_size: tuple[int, int, int]) -> None:
    """A ViT / Swin with a fixed patch grid must be built for the zoo's input size."""
    embed = getattr(model, "patch_embed", None)
    size = tuple(getattr(embed, "img_size", None) or ())
    fixed = embed is not None and size and getattr(embed, "strict_img_size", False)
    if not fixed or getattr(model, "dynamic_img_size", False) or size == tuple(input_size[1:]):
        return
    raise UserError(
        f"Zoo member '{name}' ({arch}) is built for {size[0]}x{size[1]} inputs, but zoo.input_size is "
        f"{list(input_size)}. Set zoo.members.{name}.kwargs.img_size={input_size[1]} (timm resizes hub "
        f"position embeddings to it), or zoo.input_size=[{input_size[0]}, {size[0]}, {size[1]}]."
    )


def dissect(member: Member, input_size: tuple[int, int, int]) -> Member:
    """Trace one forward (batch 2, eval) to record every node's input and output shape, and
    check the nodes form a chain: each node's input is the previous node's output."""
    ins: dict[int, torch.Tensor] = {}
    outs: dict[int, torch.Tensor] = {}
    handles = []
    for i, node_name in enumerate(member.nodes):
        module = member.model.get_submodule(node_name)
        handles.append(module.register_forward_pre_hook(lambda m, a, i=i: ins.__setitem__(i, a[0])))
        handles.append(
            module.register_forward_hook(
                lambda m, a, o, i=i: outs.__setitem__(i, o[0] if isinstance(o, (tuple, list)) else o)
            )
        )
    try:
        with torch.no_grad():
            member.model(torch.rand(2, *input_size))
    finally:
        for handle in handles:
            handle.remove()
    for i, node_name in enumerate(member.nodes):
        if i not in outs:
            raise UserError(
                f"Zoo member '{member.name}': node '{node_name}' did not run in the forward. Check its nodes list."
            )
        if i > 0 and not (ins[i].shape == outs[i - 1].shape and torch.equal(ins[i], outs[i - 1])):
            raise UserError(
                f"Zoo member '{member.name}': node '{node_name}' does not take the output of "
                f"'{member.nodes[i - 1]}' as input, so the nodes are not a chain. Fix its nodes list."
            )
    member.in_shapes = [tuple(ins[i].shape[1:]) for i in range(len(member.nodes))]
    member.out_shapes = [tuple(outs[i].shape[1:]) for i in range(len(member.nodes))]
    member.node_params = [count_parameters(member.node(i)) for i in range(len(member.nodes))]
    member.prefix_tokens = int(getattr(member.model, "num_prefix_tokens", 0)) if member.layout == "tokens" else 0
    member.flops = count_flops(member.model, torch.zeros(1, *input_size))[0]
    return member


def absolute(weights: str) -> str:
    """run:/file: sources with an absolute path, so specs work from any directory."""
    kind, sep, where = weights.partition(":")
    return f"{kind}:{Path(where).expanduser().resolve()}" if sep and kind in ("run", "file") else weights


def load_member(name: str, spec: dict[str, Any], input_size: tuple[int, int, int]) -> Member:
    """A member from its config entry: {arch, kwargs, weights, nodes, layout, accuracy}."""
    from tasks.config.check import check_node
    from tasks.config.schema import signature_of

    known = set(signature_of(ZOO_MEMBER).params)  # the one list of member keys: the typed schema's
    unknown = sorted(set(spec) - known)
    if unknown:
        raise UserError(f"Zoo member '{name}' has unknown keys {unknown}; valid keys: {sorted(known)}.")
    check_node(f"zoo.members.{name}", dict(spec), ZOO_MEMBER, known_only=True)  # types, layout, accuracy in [0, 1]
    if not spec.get("weights"):
        raise UserError(f"Zoo member '{name}' needs weights: {WEIGHT_FORMS}.")
    weights = absolute(str(spec["weights"]))
    kwargs = dict(spec.get("kwargs") or {})
    model, arch, kwargs, fingerprint, accuracy = load_model(name, spec.get("arch"), kwargs, weights)
    check_input_size(name, arch, model, tuple(input_size))
    nodes, layout = find_nodes(model, spec.get("nodes"), spec.get("layout"))
    member = Member(
        name,
        model,
        arch,
        kwargs,
        weights,
        fingerprint,
        nodes,
        layout,
        accuracy=spec.get("accuracy", accuracy),
        family=family_of(model),
    )
    return dissect(member, tuple(input_size))


def load_zoo(members: dict[str, dict[str, Any]], input_size: tuple[int, int, int]) -> dict[str, Member]:
    if not members:
        raise UserError("The zoo is empty: declare zoo.members.<name>: {arch, weights, ...}.")
    return {name: load_member(name, dict(spec), input_size) for name, spec in members.items()}
