"""Forward-pass proxies (NASWOT, k-NN, LogME; dery/proxies.py) of many candidate networks,
exactly and with shared work. A candidate runs in K + 1 stages: stem + block 0, then
adapter k-1 + block k for k = 1..K-1, then the head. Stage k's input, and its share of
NASWOT's code kernel, depend only on the blocks before it, so a prefix tree over the
candidates' blocks evaluates every shared prefix once: a leaf costs one adapter, one block
and the head instead of the whole network. The feature scores (k-NN, LogME) read the pooled
output of the last block, which is the leaf's, so they share every prefix the same way.

For the tree to equal scoring every candidate on its own (`candidate_naswot`, the
reference), everything random is a function of its place, not of the evaluation order: a
part (stem, adapter, head) is initialised from (seed, position, its definition), and stage
k of batch b runs (dropout, drop-path) under the RNG seed (seed, b, k). Kernels are sums of
integers in float64, so the order of the sums does not matter either.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from dery.blocks import Block
from dery.feature_scores import pooled
from dery.layout import from_nchw
from dery.plan import Plan
from dery.proxies import feature_score
from dery.proxy import CodeKernel, log_det_score
from dery.stitch import ReassembledNet, make_part, node_block
from dery.zoo import Member
from tasks.io.files import write_text


def part_seed(seed: int, position: int, part: Mapping[str, Any]) -> int:
    return zlib.crc32(json.dumps([seed, position, part], sort_keys=True).encode())


def stage_seed(seed: int, batch: int, stage: int) -> int:
    return (seed * 1_000_003 + batch) * 1_009 + stage


def _manual_seed(seed: int, device: torch.device) -> None:
    """Seed the generator of `device` only (torch.manual_seed also queues every accelerator
    backend's seeding, a stack capture each time, which dominated small stages)."""
    if device.type == "cuda":
        torch.cuda.default_generators[device.index or 0].manual_seed(seed)
    torch.default_generator.manual_seed(seed)


def seeded_part(part: Mapping[str, Any], seed: int, position: int) -> nn.Module:
    """A stem / adapter / head, initialised from (seed, position, definition)."""
    with torch.random.fork_rng(devices=[]):
        _manual_seed(part_seed(seed, position, part), torch.device("cpu"))
        return make_part(part)


def candidate_network(plan: Plan, members: Mapping[str, Member], seed: int) -> ReassembledNet:
    """The network of a plan with the parts the proxy scores (blocks copied from the zoo)."""
    blocks = [node_block(members[b.member].model, members[b.member].nodes[b.start : b.end + 1]) for b in plan.blocks]
    parts = [seeded_part(p, seed, k) for k, p in enumerate(plan.parts)]
    return ReassembledNet(parts[0], blocks, parts[1:-1], parts[-1], plan.parts[0]["layout"])


def _run_stage(
    part: nn.Module, block: nn.Module | None, x: torch.Tensor, seed: int, stem_layout: str | None
) -> torch.Tensor:
    with torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
        _manual_seed(seed, x.device)
        h = part(x)
        if stem_layout is not None:
            h = from_nchw(h, stem_layout)
        return block(h) if block is not None else h


@torch.no_grad()
def candidate_naswot(net: ReassembledNet, batches: Sequence[torch.Tensor], seed: int, hooks: str = "default") -> float:
    """NASWOT of one reassembled network, stage by stage under the tree's RNG seeds."""
    recorder = CodeKernel([net], hooks)
    net.train()
    scores = []
    try:
        for b, x in enumerate(batches):
            recorder.kernel = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
            h = x
            for k, block in enumerate(net.blocks):
                part = net.stem if k == 0 else net.adapters[k - 1]
                h = _run_stage(part, block, h, stage_seed(seed, b, k), net.stem_layout if k == 0 else None)
            _run_stage(net.head, None, h, stage_seed(seed, b, len(net.blocks)), None)
            scores.append(log_det_score(recorder.kernel))
    finally:
        recorder.remove()
    return float(np.mean(scores))


@torch.no_grad()
def candidate_features(net: ReassembledNet, batches: Sequence[torch.Tensor], seed: int) -> torch.Tensor:
    """(N, C) pooled features of the last block over all batches, in train mode (as NASWOT
    sees the network), stage by stage under the tree's RNG seeds."""
    net.train()
    feats = []
    for b, x in enumerate(batches):
        h = x
        for k, block in enumerate(net.blocks):
            part = net.stem if k == 0 else net.adapters[k - 1]
            h = _run_stage(part, block, h, stage_seed(seed, b, k), net.stem_layout if k == 0 else None)
        feats.append(pooled(h, net.head.layout))
    return torch.cat(feats)


def candidate_key(blocks: Sequence[Block]) -> str:
    return "|".join(f"{b.member}:{b.stage}:{b.start}-{b.end}" for b in blocks)


class ScoreCache:
    """NASWOT scores by candidate, in one JSON file whose name is a hash of every input
    that changes a score (zoo, probe, proxy settings, seed); saved as it fills."""

    def __init__(self, path: Path | None):
        self.path = path
        self.scores: dict[str, float] = {}
        if path is not None and path.is_file():
            self.scores = json.loads(path.read_text())
        self._saved = time.monotonic()

    def save(self, force: bool = False) -> None:
        if self.path is None or not (force or time.monotonic() - self._saved > 30):
            return
        write_text(self.path, json.dumps(self.scores))  # a temp file, then a rename
        self._saved = time.monotonic()


class PrefixTree:
    """Scores plans by a forward-pass proxy (`naswot`, or a feature score of the probe's
    `labels`: `knn`, `logme`), each shared prefix of blocks evaluated once."""

    def __init__(
        self,
        members: Mapping[str, Member],
        batches: Sequence[torch.Tensor],
        seed: int,
        hooks: str = "default",
        proxy: str = "naswot",
        labels: torch.Tensor | None = None,
        knn_k: int = 5,
    ):
        if proxy != "naswot" and labels is None:
            raise ValueError(f"proxy '{proxy}' scores features against labels; pass the probe's labels")
        self.members, self.batches, self.seed, self.hooks = members, list(batches), seed, hooks
        self.proxy, self.labels, self.knn_k = proxy, labels, knn_k
        self._blocks: dict[Block, nn.Module] = {}
        self.evaluated_stages = 0

    def _block(self, block: Block) -> nn.Module:
        if block not in self._blocks:
            member = self.members[block.member]
            module = node_block(member.model, member.nodes[block.start : block.end + 1])
            self._blocks[block] = module.to(self.batches[0].device).train()
        return self._blocks[block]

    def _stage(self, part: Mapping[str, Any], k: int, block: Block | None, inputs, kernels, stem_layout: str | None):
        """(outputs, kernels) of stage k for every batch, from the parent's."""
        module = seeded_part(part, self.seed, k).to(self.batches[0].device).train()
        block_module = self._block(block) if block is not None else None
        if self.proxy != "naswot":  # feature scores need no kernel
            outputs = [
                _run_stage(module, block_module, x, stage_seed(self.seed, b, k), stem_layout)
                for b, x in enumerate(inputs)
            ]
            self.evaluated_stages += 1
            return outputs, kernels
        recorder = CodeKernel([module] + ([block_module] if block_module is not None else []), self.hooks)
        outputs, new_kernels = [], []
        try:
            for b, x in enumerate(inputs):
                recorder.kernel = kernels[b].clone()
                outputs.append(_run_stage(module, block_module, x, stage_seed(self.seed, b, k), stem_layout))
                new_kernels.append(recorder.kernel)
        finally:
            recorder.remove()
        self.evaluated_stages += 1
        return outputs, new_kernels

    @torch.no_grad()
    def scores(self, plans: Sequence[Plan], cache: ScoreCache | None = None, progress: bool = True) -> list[float]:
        cache = cache or ScoreCache(None)
        keys = [candidate_key(p.blocks) for p in plans]
        todo = {key: plan for key, plan in zip(keys, plans) if key not in cache.scores}
        bar = tqdm(total=len(todo), desc="NASWOT", unit="cand", disable=None if progress else True)
        zeros = [torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device) for x in self.batches]
        try:
            self._descend(list(todo.values()), 0, self.batches, zeros, cache, bar)
        finally:
            bar.close()
            cache.save(force=True)
        return [cache.scores[key] for key in keys]

    def _leaf(self, plan: Plan, k: int, outputs, kernels) -> float:
        """The score of a candidate from its last block's outputs (and kernels so far)."""
        if self.proxy == "naswot":
            _, final = self._stage(plan.parts[k + 1], k + 1, None, outputs, kernels, None)  # the head
            return float(np.mean([log_det_score(K) for K in final]))
        features = torch.cat([pooled(h, plan.parts[k + 1]["layout"]) for h in outputs])
        return feature_score(self.proxy, features, self.labels, self.knn_k)

    def _descend(self, plans: list[Plan], k: int, inputs, kernels, cache: ScoreCache, bar) -> None:
        groups: dict[Block, list[Plan]] = defaultdict(list)
        for plan in plans:
            groups[plan.blocks[k]].append(plan)
        for block, group in groups.items():
            first = group[0]
            layout = first.parts[0]["layout"] if k == 0 else None
            outputs, sums = self._stage(first.parts[k], k, block, inputs, kernels, layout)
            if k + 1 < len(first.blocks):
                self._descend(group, k + 1, outputs, sums, cache, bar)
                continue
            cache.scores[candidate_key(first.blocks)] = self._leaf(first, k, outputs, sums)
            bar.update(1)
            cache.save()
