"""What a config value may be beyond its type: a numeric Range, a set of Choices, or a string
Pattern. Modules annotate their parameters with them (`Annotated[float, Range(0, 1)]`);
tasks.config.schema checks them."""

from __future__ import annotations

import math
from dataclasses import dataclass


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


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


POSITIVE = Range(0, low_open=True, what="a learning rate must be positive")
PROBABILITY = Range(0, 1, what="a probability or fraction")
COUNT = Range(0, what="a size or count cannot be negative")
AT_LEAST_ONE = Range(1, what="at least one")
UNBOUNDED_OR_COUNT = Range(-1, what="-1 means no limit; a count cannot be negative")
