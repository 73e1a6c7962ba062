"""Schemas of the config keys that have no `_target_`: the top level of train.yaml and of eval.yaml.
A method's own commands (stage apps) register theirs through the entry-point group kt.schemas
(tasks/config/registry.py). tasks.config.check checks a composed config against the schema of its
command before anything runs; a schema's `sections` name the sections that hold `_target_` nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

from tasks.config.types import Range, Seed

# torch.set_num_threads(threads) before the run builds anything (tasks.run.launch); null: torch's
# default (OMP_NUM_THREADS, else the cores). A run's sums, and so its numbers, depend on it.
Threads = Annotated[int, Range(1, what="at least one thread")] | None


@dataclass
class Monitor:
    metric: str | None = None
    mode: Literal["min", "max"] = "max"


@dataclass
class TrainRun:
    """conf/train.yaml: the keys beside the data/model/trainer/callbacks/logger groups."""

    sections: ClassVar[tuple[str, ...]] = ("data", "model", "trainer", "callbacks", "logger")

    task_name: str = "train"
    tags: list[str] = field(default_factory=list)
    seed: Seed = 42
    threads: Threads = None
    resume: str | None = None
    test: bool = True
    export: bool = True
    monitor: Monitor = field(default_factory=Monitor)
    optimized_metric: str | None = None


@dataclass
class EvalRun:
    """conf/eval.yaml: what eval.py evaluates and how (beside its data/trainer/logger groups)."""

    sections: ClassVar[tuple[str, ...]] = ("data", "trainer", "logger")

    ckpt: str
    task_name: str = "eval"
    tags: list[str] = field(default_factory=list)
    seed: Seed = 42
    threads: Threads = None
    mode: Literal["test", "predict"] = "test"
    data_dir: str | None = None
    batch_size: Annotated[int, Range(1, what="at least one image per batch")] = 64
    top_k: Annotated[int, Range(1, what="at least one class per image")] = 5


# config name (conf/<name>.yaml) -> the schema of its plain keys; method packages register their
# commands' schemas as entry points (tasks/config/registry.py).
BUILT_IN: dict[str, type] = {"train": TrainRun, "eval": EvalRun}
ALL_SECTIONS = ("data", "model", "trainer", "callbacks", "logger")


def command_schema(config_name: str) -> type | None:
    """The schema of a command's plain keys: train's or eval's, or one a package registers."""
    from tasks.config.registry import command_schema as registered

    return BUILT_IN.get(config_name) or registered(config_name)


def command_sections(config_name: str) -> tuple[str, ...]:
    """The sections of a command's config that hold `_target_` nodes (all of them if it has no schema)."""
    return getattr(command_schema(config_name), "sections", ALL_SECTIONS)
