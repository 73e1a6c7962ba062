"""Schemas of the plain keys of DeRy's stage apps (conf/dery/similarity.yaml, partition.yaml,
search.yaml) and of a zoo member. They are registered under the entry-point group kt.schemas
(pyproject.toml), so `python -m dery.<stage>` and every chain stage are checked before anything
runs; allowed values that a module lists (dery.partition.OBJECTIVES, ...) are read from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from tasks.config.types import PROBABILITY, AtLeastOne, Choices, Device, NonNegative, Range, Seed

# the search's proxies (dery/proxies.py reads this list)
ProxyName = Literal["naswot", "params", "flops", "knn", "logme"]


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
    input_size: Annotated[tuple[int, int, int], Range(1, what="channels, height and width of the probe images")]
    members: dict[str, ZooMember]


@dataclass
class Probe:
    split: Literal["train", "val", "test"] = "train"
    num_images: Annotated[int | None, Range(1, what="at least one image")] = None
    batch_size: AtLeastOne = 128


@dataclass
class SimilarityStage:
    """conf/dery/similarity.yaml."""

    sections: ClassVar[tuple[str, ...]] = ("data",)

    zoo: Zoo
    task_name: str = "dery_similarity"
    seed: Seed = 42
    probe: Probe = field(default_factory=Probe)
    device: Device = "auto"
    cache_dir: str = ""


@dataclass
class PartitionStage:
    """conf/dery/partition.yaml."""

    sections: ClassVar[tuple[str, ...]] = ()

    similarity: str
    task_name: str = "dery_partition"
    seed: Seed = 0
    K: Annotated[int, Range(1, what="at least one block per member")] = 4
    eps: NonNegative = 0.2
    restarts: AtLeastOne = 200
    max_iter: AtLeastOne = 200
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
    name: ProxyName = "naswot"
    knn_k: Annotated[int, Range(1, what="at least one neighbour")] = 5
    batches: Annotated[int, Range(1, what="at least one batch")] = 5
    batch_size: AtLeastOne = 32
    hooks: Annotated[str, Choices("dery.proxy.HOOK_SETS")] = "default"


@dataclass
class CandidateStage:
    """What the search and the proxy study share: the partition the candidates come from, their
    budget and the proxy settings."""

    sections: ClassVar[tuple[str, ...]] = ("data",)

    partition: str
    task_name: str = ""
    seed: Seed = 0
    num_classes: Annotated[int, Range(1, what="at least one class")] = 10
    budget: Budget = field(default_factory=Budget)
    enumerate_limit: Annotated[int, Range(1, what="at least one candidate")] = 200000
    topology_rule: bool = True
    proxy: Proxy = field(default_factory=Proxy)
    device: Device = "auto"
    threads: Annotated[int | None, Range(1, what="at least one thread")] = None


@dataclass
class SearchStage(CandidateStage):
    """conf/dery/search.yaml."""

    task_name: str = "dery_search"
    mode: Annotated[str, Choices("dery.candidates.MODES")] = "random"
    random_candidates: Annotated[int, Range(1, what="at least one candidate")] = 500
    max_scored: Annotated[int, Range(1, what="at least one candidate")] = 100
    cache: bool = True
    cache_dir: str = ""


@dataclass
class ProxyStudyStage(CandidateStage):
    """conf/dery/proxy_study.yaml."""

    task_name: str = "dery_proxy_study"
    candidates: Annotated[int, Range(2, what="at least two candidates to rank")] = 24
