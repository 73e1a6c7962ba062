"""The spec file of a reassembled network (YAML): where each block comes from (member
architecture, weights, node names), the stem / adapters / head, and the parameters and
FLOPs the search counted. `build_network(spec)` rebuilds the network with the zoo's
weights; it is what `model.spec=<path>` hands to dery.module.ReassembledModule."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dery.plan import Plan
from dery.stitch import ReassembledNet, make_part, node_block
from dery.zoo import Member, load_model
from tasks.errors import UserError
from tasks.io.files import read_yaml, require_keys, write_text

FORMAT = "dery-spec/1"


def spec_of(
    plan: Plan,
    members: Mapping[str, Member],
    input_size,
    num_classes: int,
    sets: Mapping[tuple, int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    used = list(dict.fromkeys(b.member for b in plan.blocks))
    blocks = []
    for block in plan.blocks:
        member = members[block.member]
        blocks.append(
            {
                "member": block.member,
                "stage": block.stage,
                "start": block.start,
                "end": block.end,
                "nodes": member.nodes[block.start : block.end + 1],
                "layout": member.layout,
                "set": int((sets or {}).get((block.member, block.stage), -1)),
                "params": int(sum(member.node_params[block.start : block.end + 1])),
            }
        )
    return {
        "format": FORMAT,
        "input_size": list(input_size),
        "num_classes": num_classes,
        "members": {name: members[name].source() for name in used},
        "blocks": blocks,
        "stem": plan.parts[0],
        "adapters": plan.parts[1:-1],
        "head": plan.parts[-1],
        "shapes": plan.shapes,
        "params": int(plan.params),
        "flops": int(plan.flops),
        "block_params": int(plan.block_params),
        "new_params": int(plan.new_params),
        **dict(extra or {}),
    }


def save_spec(spec: Mapping[str, Any], path: str | Path) -> Path:
    return write_text(path, yaml.safe_dump(dict(spec), sort_keys=False))


def load_spec(path: str | Path | None) -> dict[str, Any]:
    if not path:
        raise UserError(
            "model.spec is not set. Point it at the spec.yaml of a dery.search run "
            "(python -m dery.search partition=<run dir>), or run the whole method: "
            "python -m tasks.chain dery_digits"
        )
    path = Path(str(path)).expanduser()
    spec = read_yaml(path, "DeRy spec", "Make one with: python -m dery.search partition=<dery.partition run dir>")
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise UserError(f"{path} is not a DeRy spec (format {FORMAT}). Use the spec.yaml a dery.search run wrote.")
    return require_keys(spec, path, "DeRy spec", ("members", "blocks", "stem", "adapters", "head"))


def build_network(spec: Mapping[str, Any], pretrained: bool = True, random_seed: int | None = None) -> ReassembledNet:
    """The network of a spec. Block weights come from the members' sources (random with
    `pretrained=False`: for loading a trained network's state, or, drawn with `random_seed`,
    the from-scratch control); the stem, adapters and head are newly initialised."""
    loaded = {}
    for name, source in spec["members"].items():
        weights = source["weights"] if pretrained else "random"
        loaded[name] = load_model(name, source["arch"], dict(source.get("kwargs") or {}), weights, random_seed)[0]
    blocks = [node_block(loaded[b["member"]], b["nodes"]) for b in spec["blocks"]]
    adapters = [make_part(a) for a in spec["adapters"]]
    return ReassembledNet(make_part(spec["stem"]), blocks, adapters, make_part(spec["head"]), spec["stem"]["layout"])
