"""The exact plan of a candidate network: its stem, adapters and head (with the strides that
follow from the spatial sizes), the shape between every two parts, and its parameters and
FLOPs. FLOPs are counted with torch's FlopCounterMode (2 per multiply-add, attention
included) on one image, part by part with a cache keyed by the part and its input shape;
the parts add up to the whole network exactly (tests/dery/test_search.py builds it)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from dery.blocks import Block
from dery.flops import count_flops
from dery.layout import channels, from_nchw, grid
from dery.stitch import any_resolution, make_part
from dery.zoo import Member
from tasks.models.backbones import count_parameters


class Unbuildable(Exception):
    """A block cannot run on the input it would get (e.g. a 2x2 down-sampling on a 1x1 map)."""


@dataclass
class Plan:
    blocks: list[Block]
    parts: list[dict[str, Any]]  # stem, K - 1 adapters, head
    shapes: list[list[int]] = field(default_factory=list)  # input shape of every block, then the head's
    params: int = 0
    flops: int = 0
    block_params: int = 0

    @property
    def new_params(self) -> int:
        """Stem + adapters + head: the trainable part in frozen training."""
        return self.params - self.block_params


class Planner:
    """Plans (and costs) candidates over a dissected zoo, caching every part it counts."""

    def __init__(self, members: Mapping[str, Member], input_size: Sequence[int], num_classes: int):
        self.members, self.input_size, self.num_classes = dict(members), tuple(input_size), num_classes
        for member in self.members.values():
            any_resolution(member.model.eval())
        self._blocks: dict[tuple, tuple[int, tuple]] = {}
        self._parts: dict[str, tuple[int, int, tuple]] = {}

    def block_cost(self, block: Block, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        """(FLOPs, output shape) of a block fed `shape`."""
        key = (block.member, block.start, block.end, shape)
        if key not in self._blocks:
            member = self.members[block.member]
            seq = nn.Sequential(*[member.node(i) for i in range(block.start, block.end + 1)])
            try:
                flops, out = count_flops(seq, torch.zeros(1, *shape))
                self._blocks[key] = (flops, tuple(out.shape[1:]))
            except (RuntimeError, AssertionError, ValueError) as err:  # e.g. a window or kernel above the map
                self._blocks[key] = Unbuildable(f"{block.member}[{block.stage}] cannot take input {shape}: {err}")
        if isinstance(self._blocks[key], Unbuildable):
            raise self._blocks[key]
        return self._blocks[key]

    def part_cost(self, part: dict[str, Any], shape: tuple[int, ...]) -> tuple[int, int, tuple[int, ...]]:
        """(parameters, FLOPs, output shape) of a stem / adapter / head fed `shape`."""
        key = json.dumps([part, shape], sort_keys=True)
        if key not in self._parts:
            module = make_part(part).eval()
            flops, out = count_flops(module, torch.zeros(1, *shape))
            if part["kind"] == "stem":
                out = from_nchw(out, part["layout"])
            self._parts[key] = (count_parameters(module), flops, tuple(out.shape[1:]))
        return self._parts[key]

    def stem(self, first: Block) -> dict[str, Any]:
        member = self.members[first.member]
        height = member.in_grid(first.start)[0]
        stride = 1
        while stride * 2 * height <= self.input_size[1]:  # a power of two, as the stem's pools give
            stride *= 2
        return {
            "kind": "stem",
            "channels": member.in_channels(first.start),
            "stride": stride,
            "in_chans": self.input_size[0],
            "layout": member.layout,
        }

    def adapter(self, prev: Block, nxt: Block, shape: tuple[int, ...]) -> dict[str, Any]:
        src, dst = self.members[prev.member], self.members[nxt.member]
        current, expected = grid(shape, src.layout)[0], dst.in_grid(nxt.start)[0]
        stride = max(1, current // expected)
        kind = "linear" if stride == 1 and src.layout != "nchw" and dst.layout != "nchw" else "conv"
        return {
            "kind": kind,
            "in": channels(shape, src.layout),
            "out": dst.in_channels(nxt.start),
            "stride": stride,
            "src": src.layout,
            "dst": dst.layout,
        }

    def head(self, last: Block, shape: tuple[int, ...]) -> dict[str, Any]:
        layout = self.members[last.member].layout
        return {"kind": "head", "in": channels(shape, layout), "out": self.num_classes, "layout": layout}

    def plan(self, blocks: Sequence[Block]) -> Plan:
        """The candidate's exact plan; Unbuildable when a block cannot take its input."""
        blocks = list(blocks)
        plan = Plan(blocks, [])
        shape: tuple[int, ...] = self.input_size
        for k, block in enumerate(blocks):
            part = self.stem(block) if k == 0 else self.adapter(blocks[k - 1], block, shape)
            params, flops, shape = self.part_cost(part, shape)
            plan.parts.append(part)
            plan.shapes.append(list(shape))
            block_flops, shape = self.block_cost(block, shape)
            member = self.members[block.member]
            plan.block_params += sum(member.node_params[block.start : block.end + 1])
            plan.params += params
            plan.flops += flops + block_flops
        head = self.head(blocks[-1], shape)
        params, flops, _ = self.part_cost(head, shape)
        plan.parts.append(head)
        plan.shapes.append(list(shape))
        plan.params += params + plan.block_params
        plan.flops += flops
        return plan


def buildable_plans(planner: Planner, candidates: Iterable[Sequence[Block]]) -> list[Plan]:
    """Plans of the buildable candidates."""
    out = []
    for candidate in candidates:
        try:
            out.append(planner.plan(candidate))
        except Unbuildable:
            continue
    return out
