"""The runs of the GPU plan as jobs: one process each, with the jobs it must wait for.

An `experiment:` entry is one training run (`python -m tasks.train`). A `chain:` entry is every run of that chain
(tasks.studies.chain.plan, seed by seed), planned from the same `<stage>:key=value` overrides that
`python -m tasks.chain <chain> ...` would take, so the chain's own report and resume apply."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from tasks.config.location import CONF_DIR
from tasks.errors import UserError
from tasks.studies.scheduler import Job  # the GPU route's jobs are the scheduler's

ROOT = Path(__file__).resolve().parents[2]  # the checkout the jobs run in
CHAIN_DIR_REF = re.compile(r"\{run:[A-Za-z0-9_]+\}/\.\.")  # a stage that reads the whole chain dir


def training_stages(chain) -> list[str]:
    return [name for name, stage in chain.stages.items() if "experiment" in stage]


def module_default(module: str, key: str):
    """A module stage's default value of `key`, from its own conf (repfusion.oracle -> conf/repfusion/oracle.yaml)."""
    conf = OmegaConf.load(CONF_DIR / (module.replace(".", "/") + ".yaml"))
    return OmegaConf.select(conf, key)


def nested_override(chain, stage: str, key: str, extra: list[str]) -> str:
    """`key=[...]`: the stage's list of overrides for the runs it launches (the chain's value,
    else the module's default), with `extra` appended."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    current = None
    for item in map(str, chain.stages[stage].get("overrides", [])):
        if item.split("=", 1)[0].strip() == key:
            current = parser.parse_override(item).value()
    if current is None:
        current = OmegaConf.to_container(module_default(str(chain.stages[stage].module), key))
    items = [*map(str, current or []), *extra]
    if any("'" in item for item in items):
        raise UserError(f"{stage}:{key}: an override with a single quote cannot be nested: {items}")
    return f"{key}=[" + ",".join(f"'{item}'" for item in items) + "]"


def chain_overrides(chain, common: list[str], spec: dict, mode: str) -> list[str]:
    """The `<stage>:key=value` overrides of a chain entry, as `python -m tasks.chain` takes them."""
    train = [*common, *spec.get(mode, [])]
    names = list(chain.stages)
    unknown = sorted((set(spec.get("stages", {})) | set(spec.get("nested", {}))) - set(names))
    if unknown:
        raise UserError(f"plan entry names stages {unknown} that chain {spec['chain']} does not have: {names}")
    out = [f"{stage}:{o}" for stage in training_stages(chain) for o in train]
    for stage, per_mode in spec.get("stages", {}).items():
        out += [f"{stage}:{o}" for o in per_mode.get(mode, [])]
    for stage, key in spec.get("nested", {}).items():
        out.append(f"{stage}:{nested_override(chain, stage, key, train)}")
    return out


def split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Common and per-stage overrides, split as tasks.studies.chain's command line splits them."""
    common, per_stage = [], {}
    for override in overrides:
        stage, sep, rest = override.partition(":")
        if sep and "=" not in stage:
            per_stage.setdefault(stage, []).append(rest)
        else:
            common.append(override)
    return common, per_stage


def experiment_job(name: str, spec: dict, overrides: list[str], logs: Path) -> Job:
    run_dir = (logs / name).resolve()
    command = [
        sys.executable,
        "-m",
        "tasks.train",
        f"experiment={spec['experiment']}",
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]
    return Job(name, name, command, run_dir, priority=int(spec.get("priority", 0)))


def chain_jobs(name: str, spec: dict, chain, overrides: list[str], chain_dir: Path, seeds: list[int] | None):
    """The chain's runs (tasks.studies.chain.StageRun) and one job per run. A run waits for the runs
    its `{run:<stage>}` placeholders name; a stage that reads the chain dir (`{run:x}/..`, e.g.
    a report or a picture over other stages) waits for every earlier run."""
    from tasks.studies.chain import plan

    common, per_stage = split_overrides(overrides)
    runs = plan(chain, chain_dir.resolve(), common, per_stage, seeds)
    key_of = {run.run_dir: job_key(name, run) for run in runs}
    jobs = []
    for index, run in enumerate(runs):
        deps = [key_of[d] for d in run.needs if d in key_of]
        if any(CHAIN_DIR_REF.search(str(o)) for o in chain.stages[run.stage].get("overrides", [])):
            deps = [key_of[r.run_dir] for r in runs[:index]]
        jobs.append(
            Job(
                key_of[run.run_dir],
                name,
                list(run.command),
                run.run_dir,
                sorted(set(deps)),
                priority=int(spec.get("priority", 0)),
            )
        )
    return runs, jobs


def job_key(entry: str, run) -> str:
    return f"{entry}/{run.stage}" + (f"/seed{run.seed}" if run.seed is not None else "")
