"""What a config value may be beyond its type: a numeric Range, a set of Choices, a string
Pattern, or a dict handed on as the keyword arguments of a callable (KeywordsOf). Modules
annotate their parameters with them (`Annotated[float, Range(0, 1)]`, or the aliases at the
end of this file); tasks.config.schema checks them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value (instead of <=)
    what: str = ""

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            bound = f"in [{_num(self.low)}, {_num(self.high)}]"
        elif self.low is not None:
            bound = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        else:
            bound = f"<= {_num(self.high)}"
        return f"{bound} ({self.what})" if self.what else bound


@dataclass(frozen=True)
class Choices:
    """Allowed values, given inline or as the dotted path of a module's tuple constant (read
    when checked, so the module stays the one place that lists them):
    `objective: Annotated[str, Choices("dery.partition.OBJECTIVES")]`."""

    source: str | tuple

    def values(self) -> tuple:
        if isinstance(self.source, tuple):
            return self.source
        from hydra.utils import get_object

        found = get_object(self.source)
        return tuple(found() if callable(found) else found)


@dataclass(frozen=True)
class Pattern:
    """A string that must match `regex` (fully), e.g. a device name."""

    regex: str
    what: str


@dataclass(frozen=True)
class KeywordsOf:
    """A dict parameter that the module hands to the callable `target` (a dotted path) as
    keyword arguments, so its keys are checked against that callable's signature:
    `backbone: Annotated[dict[str, Any], KeywordsOf("tasks.models.backbones.create_backbone")]`."""

    target: str


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


POSITIVE = Range(0, low_open=True, what="a learning rate must be positive")
PROBABILITY = Range(0, 1, what="a probability or fraction")
COUNT = Range(0, what="a size or count cannot be negative")
AT_LEAST_ONE = Range(1, what="at least one")
UNBOUNDED_OR_COUNT = Range(-1, what="-1 means no limit; a count cannot be negative")
NON_NEGATIVE = Range(0, what="cannot be negative")

# Annotations for the common cases (`batch_size: AtLeastOne = 64`, `dropout: Probability = 0.1`).
Count = Annotated[int, COUNT]
Counts = Annotated[Sequence[int], COUNT]
AtLeastOne = Annotated[int, AT_LEAST_ONE]
Probability = Annotated[float, PROBABILITY]
NonNegative = Annotated[float, NON_NEGATIVE]
Positive = Annotated[float, Range(0, low_open=True, what="must be positive")]
Seed = Annotated[int, Range(0, 2**32 - 1, what="a seed is a non-negative 32-bit integer")]
Device = Annotated[str, Pattern(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, cuda, cuda:<index> or mps")]
