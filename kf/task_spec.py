"""Task declarations: each task maps the values of one ground-truth factor (the class label,
or a named factor of multi-factor data) to task classes through label groups. Generators
make the defaults (one-vs-rest per class, one task per factor); every declaration is
validated at start-up, and errors say what to change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tasks.errors import UserError

GENERATORS = ("one_vs_rest", "per_factor")
TASK_KEYS = ("name", "factor", "groups", "bins")


@dataclass(frozen=True)
class TaskSpec:
    """One task: the factor it reads and the groups of factor values that form its classes
    (class j = groups[j])."""

    name: str
    factor: str
    groups: tuple[tuple[int, ...], ...]

    @property
    def num_classes(self) -> int:
        return len(self.groups)

    @property
    def num_values(self) -> int:
        return sum(len(g) for g in self.groups)

    def value_to_class(self) -> torch.Tensor:
        """(num_values,) long: the task class of every factor value."""
        table = torch.empty(self.num_values, dtype=torch.long)
        for cls, group in enumerate(self.groups):
            table[list(group)] = cls
        return table

    def group_matrix(self) -> torch.Tensor:
        """(num_values, num_classes) 0/1: probabilities over values @ it = over task classes."""
        return torch.nn.functional.one_hot(self.value_to_class(), self.num_classes).float()

    def coarsening(self, other: TaskSpec) -> torch.Tensor | None:
        """(self classes, other classes) 0/1 matrix when every class of self lies inside one
        class of `other` (same factor), so probabilities over self's classes @ it sum into
        probabilities over other's; None otherwise."""
        if self.factor != other.factor or self.num_values != other.num_values:
            return None
        mine, theirs = self.value_to_class().tolist(), other.value_to_class().tolist()
        mapping: dict[int, int] = {}
        if any(mapping.setdefault(a, b) != b for a, b in zip(mine, theirs)):
            return None
        matrix = torch.zeros(self.num_classes, other.num_classes)
        matrix[list(mapping), list(mapping.values())] = 1.0
        return matrix

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "factor": self.factor, "groups": [list(g) for g in self.groups]}


def one_vs_rest(factor: str, num_values: int) -> list[TaskSpec]:
    """One binary task per value: class 0 = every other value, class 1 = that value."""
    return [
        TaskSpec(
            f"{factor}{v}" if factor != "label" else f"class{v}",
            factor,
            (tuple(u for u in range(num_values) if u != v), (v,)),
        )
        for v in range(num_values)
    ]


def per_factor(factor_sizes: dict[str, int]) -> list[TaskSpec]:
    """One task per factor whose classes are the factor's values."""
    return [TaskSpec(name, name, tuple((v,) for v in range(n))) for name, n in factor_sizes.items()]


def _bins(num_values: int, bins: int) -> tuple[tuple[int, ...], ...]:
    """Contiguous value ranges of (nearly) equal size."""
    edges = [round(i * num_values / bins) for i in range(bins + 1)]
    return tuple(tuple(range(edges[i], edges[i + 1])) for i in range(bins))


def _declared(index: int, entry: Any, factor_sizes: dict[str, int], key: str) -> TaskSpec:
    where = f"{key}[{index}]"
    if not isinstance(entry, dict):
        raise UserError(
            f"{where} must be a mapping like "
            f"{{name: low_high, factor: label, groups: [[0,1,2,3,4],[5,6,7,8,9]]}}, got {entry!r}."
        )
    unknown = sorted(set(entry) - set(TASK_KEYS))
    if unknown:
        raise UserError(f"{where} has unknown keys {unknown}. Valid keys: {list(TASK_KEYS)}.")
    factors = list(factor_sizes)
    factor = str(entry.get("factor", factors[0] if len(factors) == 1 else ""))
    if factor not in factor_sizes:
        raise UserError(
            f"{where}.factor='{factor}' is not a factor of the data. Factors: {factors} "
            "(set model.factor_sizes to the data's factors)."
        )
    n = factor_sizes[factor]
    if entry.get("groups") is not None and entry.get("bins") is not None:
        raise UserError(f"{where} sets both 'groups' and 'bins'; keep one.")
    if entry.get("bins") is not None:
        bins = int(entry["bins"])
        if not 2 <= bins <= n:
            raise UserError(f"{where}.bins={bins} must be between 2 and the factor's {n} values.")
        groups = _bins(n, bins)
    elif entry.get("groups") is not None:
        groups = tuple(tuple(int(v) for v in (g if isinstance(g, (list, tuple)) else [g])) for g in entry["groups"])
    else:
        groups = tuple((v,) for v in range(n))
    if len(groups) < 2 or any(len(g) == 0 for g in groups):
        raise UserError(
            f"{where}.groups must list at least two non-empty groups of {factor} values, "
            f"got {[list(g) for g in groups]}."
        )
    flat = [v for g in groups for v in g]
    bad = sorted({v for v in flat if not 0 <= v < n})
    twice = sorted({v for v in flat if flat.count(v) > 1})
    missing = sorted(set(range(n)) - set(flat))
    if bad:
        raise UserError(f"{where}.groups has values {bad} outside 0..{n - 1} (factor '{factor}' has {n} values).")
    if twice:
        raise UserError(
            f"{where}.groups puts values {twice} in more than one group; every value belongs to exactly one group."
        )
    if missing:
        raise UserError(
            f"{where}.groups leaves values {missing} of '{factor}' out; add them to a group "
            f"(e.g. a last 'rest' group {missing}) so every sample has a task class."
        )
    return TaskSpec(str(entry.get("name") or f"task{index}"), factor, groups)


def build_tasks(tasks: str | Sequence[Any], factor_sizes: dict[str, int], key: str = "model.tasks") -> list[TaskSpec]:
    """Task specs from a generator name or a list of declarations, validated."""
    if not factor_sizes or any(int(n) < 2 for n in factor_sizes.values()):
        raise UserError(
            f"model.factor_sizes must map each ground-truth factor to its number of values (>= 2), got {factor_sizes}."
        )
    factor_sizes = {str(k): int(v) for k, v in factor_sizes.items()}
    if isinstance(tasks, str):
        if tasks == "one_vs_rest":
            if len(factor_sizes) != 1:
                raise UserError(
                    f"{key}=one_vs_rest needs a single-factor data set; this one has {list(factor_sizes)}. "
                    "Use model.tasks=per_factor or declare the tasks as a list."
                )
            specs = one_vs_rest(*next(iter(factor_sizes.items())))
        elif tasks == "per_factor":
            specs = per_factor(factor_sizes)
        else:
            raise UserError(
                f"{key}='{tasks}' is not a generator. Use one of {list(GENERATORS)} or a list of "
                "{name, factor, groups | bins} declarations."
            )
    else:
        specs = [_declared(i, entry, factor_sizes, key) for i, entry in enumerate(tasks)]
    if not specs:
        raise UserError(f"{key} is empty; declare at least one task.")
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"Task names {dup} are used more than once; give every task its own name.")
    return specs


def task_targets(specs: Sequence[TaskSpec], factors: Sequence[str], y: torch.Tensor) -> torch.Tensor:
    """(B, K) task classes from ground truth `y`: (B,) for a single factor, (B, F) otherwise."""
    y = y.view(-1, 1) if y.dim() == 1 else y
    columns = []
    for spec in specs:
        table = spec.value_to_class().to(y.device)
        columns.append(table[y[:, factors.index(spec.factor)]])
    return torch.stack(columns, 1)


def decode_factor(log_probs: Sequence[torch.Tensor], specs: Sequence[TaskSpec], factor: str) -> torch.Tensor | None:
    """Predict a factor's value from the tasks over it, as a product of experts:
    score(v) = sum_k log p_k(class of v). For one-vs-rest tasks this is the argmax of the
    positive margins. None when the tasks cannot tell every value apart."""
    chosen = [(lp, s) for lp, s in zip(log_probs, specs) if s.factor == factor]
    if not chosen:
        return None
    n = chosen[0][1].num_values
    signatures = {tuple(int(s.value_to_class()[v]) for _, s in chosen) for v in range(n)}
    if len(signatures) < n:
        return None
    score = sum(lp @ s.group_matrix().to(lp).T for lp, s in chosen)
    return score.argmax(1)
