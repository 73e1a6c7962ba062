"""Schemas of the config keys that have no `_target_`: the top level of train.yaml, of eval.yaml and of
the DeRy stage apps (conf/dery/*.yaml), and a zoo member. tasks.config.check checks a composed
config against the schema of its command before anything runs. Allowed values that a module
lists (dery.partition.OBJECTIVES, ...) are read from that module, never copied here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from tasks.config.types import PROBABILITY, Choices, Pattern, Range

DEVICE = Annotated[str, Pattern(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, cuda, cuda:<index> or mps")]
SEED = Annotated[int, Range(0, 2**32 - 1, what="a seed is a non-negative 32-bit integer")]


@dataclass
class Monitor:
    metric: str | None = None
    mode: Literal["min", "max"] = "max"


@dataclass
class TrainRun:
    """conf/train.yaml: the keys beside the data/model/trainer/callbacks/logger groups."""

    task_name: str = "train"
    tags: list[str] = field(default_factory=list)
    seed: SEED = 42
    resume: str | None = None
    test: bool = True
    export: bool = True
    monitor: Monitor = field(default_factory=Monitor)
    optimized_metric: str | None = None


@dataclass
class EvalRun:
    """conf/eval.yaml: what eval.py evaluates and how (beside its data/trainer/logger groups)."""

    ckpt: str
    task_name: str = "eval"
    tags: list[str] = field(default_factory=list)
    seed: SEED = 42
    mode: Literal["test", "predict"] = "test"
    data_dir: str | None = None
    batch_size: Annotated[int, Range(1, what="at least one image per batch")] = 64
    top_k: Annotated[int, Range(1, what="at least one class per image")] = 5


@dataclass
class ZooMember:
    """One entry of zoo.members (dery/zoo.py reads it)."""

    weights: str
    arch: str | None = None
    kwargs: dict[str, Any] | None = None
    nodes: list[str] | None = None
    layout: Annotated[str | None, Choices("dery.nodes.LAYOUTS")] = None
    accuracy: Annotated[float | None, PROBABILITY] = None


@dataclass
class Zoo:
    input_size: tuple[int, int, int]
    members: dict[str, ZooMember]


@dataclass
class Probe:
    split: Literal["train", "val", "test"] = "train"
    num_images: Annotated[int | None, Range(1, what="at least one image")] = None
    batch_size: int = 128


@dataclass
class SimilarityStage:
    """conf/dery/similarity.yaml."""

    zoo: Zoo
    task_name: str = "dery_similarity"
    seed: SEED = 42
    probe: Probe = field(default_factory=Probe)
    device: DEVICE = "auto"
    cache_dir: str = ""


@dataclass
class PartitionStage:
    """conf/dery/partition.yaml."""

    similarity: str
    task_name: str = "dery_partition"
    seed: SEED = 0
    K: Annotated[int, Range(1, what="at least one block per member")] = 4
    eps: float = 0.2
    restarts: int = 200
    max_iter: int = 200
    objective: Annotated[str, Choices("dery.partition.OBJECTIVES")] = "anchor"
    same_stage_only: bool = False


@dataclass
class Budget:
    params: Annotated[float | None, Range(0, low_open=True, what="a parameter budget")] = None
    flops: Annotated[float | None, Range(0, low_open=True, what="a FLOPs budget")] = None
    min_params: Annotated[float | None, Range(0, what="a lower bound")] = None
    min_flops: Annotated[float | None, Range(0, what="a lower bound")] = None


@dataclass
class Proxy:
    batches: Annotated[int, Range(1, what="at least one batch")] = 5
    batch_size: int = 32
    hooks: Annotated[str, Choices("dery.proxy.HOOK_SETS")] = "default"


@dataclass
class SearchStage:
    """conf/dery/search.yaml."""

    partition: str
    task_name: str = "dery_search"
    seed: SEED = 0
    num_classes: Annotated[int, Range(1, what="at least one class")] = 10
    budget: Budget = field(default_factory=Budget)
    mode: Annotated[str, Choices("dery.candidates.MODES")] = "random"
    random_candidates: Annotated[int, Range(1, what="at least one candidate")] = 500
    max_scored: Annotated[int, Range(1, what="at least one candidate")] = 100
    enumerate_limit: Annotated[int, Range(1, what="at least one candidate")] = 200000
    topology_rule: bool = True
    proxy: Proxy = field(default_factory=Proxy)
    device: DEVICE = "auto"
    cache: bool = True
    cache_dir: str = ""


# config name (conf/<name>.yaml) -> (schema of its plain keys, sections holding _target_ nodes)
COMMANDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "train": (TrainRun, ("data", "model", "trainer", "callbacks", "logger")),
    "eval": (EvalRun, ("data", "trainer", "logger")),
    "dery/similarity": (SimilarityStage, ("data",)),
    "dery/partition": (PartitionStage, ()),
    "dery/search": (SearchStage, ("data",)),
}
