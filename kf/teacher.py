"""The teacher of Knowledge Factorization, named in the shared teacher-source grammar
(tasks.distill.teacher_source: a run's export of a classifier or a multi-head network,
`run:` / `latest:`, a local checkpoint with its architecture and key prefix, a timm name);
read through forward hooks on its stages (for InfoMax) plus its logits (for KD)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Annotated, Any

import torch
import torch.nn as nn

from kf.multihead import KIND as MULTI_HEAD
from kf.task_spec import TaskSpec
from tasks.config.types import Choices, Count
from tasks.distill.taps import FeatureTap
from tasks.distill.teacher_source import EXPORT, load_timm_teacher, parse_source
from tasks.errors import UserError
from tasks.io.cards import load_card, read_card

BN_MODES = ("eval", "train")


@dataclasses.dataclass
class TeacherSpec:
    source: str | None = None  # any form of tasks.distill.teacher_source: export, run:, latest:, weights, timm name
    arch: str | None = None  # timm architecture of a checkpoint source
    prefix: str | None = None  # key prefix inside a checkpoint, e.g. net. for a ClassificationModule
    num_classes: Count | None = None  # outputs of a checkpoint / timm teacher (default: the factor's values)
    small_input_stem: bool = False  # the architecture of a checkpoint source uses the small-input stem
    timm_kwargs: dict | None = None  # further timm arguments of a checkpoint / timm-name architecture
    pretrained: bool = True  # timm name source: hub weights (needs the network)
    factor: str = "label"  # the ground-truth factor a single-head teacher predicts
    # eval: frozen-teacher contract | train: the original's batch statistics
    bn_mode: Annotated[str, Choices("kf.teacher.BN_MODES")] = "eval"

    @classmethod
    def parse(cls, cfg: dict[str, Any] | None) -> TeacherSpec:
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(cfg or {}) - set(valid))
        if unknown:
            raise UserError(f"model.teacher has unknown keys {unknown}. Valid keys: {valid}.")
        from tasks.config.check import check_node

        check_node("model.teacher", dict(cfg or {}), "kf.teacher.TeacherSpec", known_only=True)  # types, BN_MODES
        return cls(**(cfg or {}))


MAKE_TEACHER = (
    "A digits teacher comes from `python train.py experiment=classify_digits` (then "
    "model.teacher.source=run:<its run dir>); `python -m tasks.chain kf_digits` trains the "
    "teacher and factorizes it in one command (kf_shapes likewise)."
)


def load_teacher(spec: TeacherSpec, factor_sizes: dict[str, int]) -> tuple[nn.Module, list[TaskSpec]]:
    """The teacher network and the tasks its outputs predict (in output order)."""
    if not spec.source:
        raise UserError(
            "model.teacher.source is not set. Point it at a run's export "
            "(<run dir>/export, or run:<run dir>), a checkpoint (with model.teacher.arch and .prefix) or a timm name. "
            + MAKE_TEACHER
        )
    src = parse_source(str(spec.source), make=MAKE_TEACHER)
    if src.form == EXPORT:
        card = read_card(src.path)
        if card.kind == MULTI_HEAD:
            net = load_card(card)
            return net, net.specs
    if spec.factor not in factor_sizes:
        raise UserError(f"model.teacher.factor='{spec.factor}' is not a factor of the data {list(factor_sizes)}.")
    model = load_timm_teacher(
        src,
        arch=spec.arch,
        prefix=spec.prefix,
        num_classes=None if src.form == EXPORT else spec.num_classes or factor_sizes[spec.factor],
        small_input_stem=spec.small_input_stem,
        pretrained=spec.pretrained,
        **(spec.timm_kwargs or {}),
    )
    n = factor_sizes[spec.factor]
    if getattr(model, "num_classes", n) != n:
        raise UserError(
            f"The teacher predicts {model.num_classes} classes but factor '{spec.factor}' has {n} values. "
            "Use a teacher trained on this data, or set model.teacher.factor to the factor it predicts."
        )
    return model, [TaskSpec(spec.factor, spec.factor, tuple((v,) for v in range(n)))]


def stage_names(model: nn.Module, stages: Sequence[int | str]) -> list[str]:
    """Module names of stages given as timm feature_info indices or as dotted names."""
    backbone, prefix = (
        (model.backbone, "backbone.") if hasattr(model, "heads") and hasattr(model, "backbone") else (model, "")
    )
    info = list(getattr(backbone, "feature_info", None) or [])
    names = []
    for stage in stages:
        if isinstance(stage, str):
            names.append(stage)
            continue
        if not info or not -len(info) <= int(stage) < len(info):
            raise UserError(
                f"Teacher stage index {stage} is out of range: the teacher has {len(info)} feature stages "
                f"({[i.get('module') for i in info]}). Use indices in {-len(info)}..{len(info) - 1} or module names."
            )
        names.append(prefix + info[int(stage)]["module"])
    return names


def pool(x: torch.Tensor) -> torch.Tensor:
    """Global average of a feature map (NCHW) or token sequence (NLC); vectors pass through."""
    if x.dim() == 4:
        return x.mean((2, 3))
    if x.dim() == 3:
        return x.mean(1)
    return x


@contextlib.contextmanager
def batch_statistics(module: nn.Module, enabled: bool):
    """Run the teacher with train-mode BatchNorm (the original's behaviour), then back to eval."""
    if not enabled:
        yield
        return
    module.train()
    try:
        yield
    finally:
        module.eval()


class TeacherReader:
    """Pooled stage features and logits of a (frozen) teacher in one forward. The hooks live
    only for that forward, so copies of the module (EMA, deepcopy) never share them."""

    def __init__(self, teacher: nn.Module, stages: Sequence[int | str], bn_mode: str = "eval"):
        self.teacher = teacher  # a tasks.distill.frozen.FrozenTeacher
        self.names = stage_names(teacher.module, stages)
        FeatureTap(teacher.module, self.names).remove()  # fails now, with the valid names, on a wrong one
        self.train_bn = bn_mode == "train"

    def __call__(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        result: dict[str, Any] = {}
        tap = FeatureTap(self.teacher.module, self.names)
        try:
            with batch_statistics(self.teacher.module, self.train_bn):
                stages = tap(lambda: result.setdefault("out", self.teacher(x)))
        finally:
            tap.remove()
        out = result["out"]
        logits = list(out) if isinstance(out, (list, tuple)) else [out]
        return [pool(stages[n]).float() for n in self.names], [t.float() for t in logits]
