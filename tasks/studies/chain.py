"""Multi-stage work as one command: a chain of runs (teacher -> distil -> fine-tune, zoo ->
search -> train, ...) declared in conf/chain/<name>.yaml (or a chain file of yours, by path or
in a config folder of yours: --config-dir / KT_CONFIG_DIR). Each stage is an ordinary run
in its own dir under the chain dir; later stages get earlier run dirs through
`{run:<stage>}` placeholders (a stage may also wait for others with `needs: [<stage>, ...]`);
runs that do not need each other go side by side (--jobs). Finished stages are skipped when the
chain is re-run with `--dir`, so an interrupted chain continues where it stopped.

    python -m tasks.chain repfusion_digits                 # the whole chain, independent runs side by side
    python -m tasks.chain repfusion_digits --jobs 1 threads=2   # one run at a time, two threads each
    python -m tasks.chain repfusion_digits trainer.max_epochs=1   # to every stage whose config has the key
    python -m tasks.chain repfusion_digits trainer=ddp_cpu distil:trainer.max_epochs=5
    python -m tasks.chain repfusion_digits --dir logs/chains/repfusion_digits/<stamp>   # continue
    python -m tasks.chain <name> --dir <dir> --stages a,b   # only these stages (e.g. two workers on
                                                          # disjoint stages); the report once all are done
    python -m tasks.chain <name> --launcher slurm --slurm partition=gpu   # one SLURM job per stage run
    kt-chain my_chain.yaml --config-dir my_conf              # your chain, your experiments beside ours

Stages run in the folder the chain runs in (`python -m tasks.train`, so a `_target_` may name a module there).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tasks.config.folders import check_folders, config_folders, offered
from tasks.config.location import USER_CONFIG_ENV, add_env_config_dir, working_dir_on_path
from tasks.errors import UserError
from tasks.io.files import read_yaml, write_text
from tasks.io.places import require_writable
from tasks.run.boundary import guarded
from tasks.run.lock import holding
from tasks.run.preflight import check_stage_commands
from tasks.run.summary import finished
from tasks.studies.forkserver import launch as forked
from tasks.studies.forkserver import preload
from tasks.studies.overrides import route
from tasks.studies.scheduler import Job, popen, run_jobs
from tasks.studies.study import rows_from_summaries, write_study

PLACEHOLDER = re.compile(r"\{run:([A-Za-z0-9_]+)\}")
READS_CHAIN_DIR = re.compile(r"\{run:[A-Za-z0-9_]+\}/\.\.")


@dataclass
class StageRun:
    stage: str
    seed: int | None
    run_dir: Path
    command: list[str] = field(default_factory=list)
    needs: list[Path] = field(default_factory=list)  # the run dirs its {run:<stage>} placeholders name

    @property
    def finished(self) -> bool:
        return finished(self.run_dir)  # an interrupted stage's summary does not count


def find_chain(name: str) -> Path:
    """A chain file: a path (ends in .yaml), else <name>.yaml in conf/chain/ (packaged), then in the
    chain/ folder of each of the user's config folders (KT_CONFIG_DIR, kt-chain --config-dir)."""
    if name.endswith((".yaml", ".yml")):
        if Path(name).is_file():
            return Path(name)
        what = "a folder" if Path(name).is_dir() else "not there"
        raise UserError(f"Unknown chain '{name}': {Path(name).resolve()} is {what}. Give the path to a chain file.")
    folders = config_folders()  # the packaged one, then KT_CONFIG_DIR's (kt-chain --config-dir adds to it)
    check_folders(folders)
    for _, folder in folders:
        if (folder / "chain" / f"{name}.yaml").is_file():
            return folder / "chain" / f"{name}.yaml"
    lines, _ = offered(folders, "chain")
    raise UserError(f"Unknown chain '{name}' (or give a chain file by its path). Available:\n" + "\n".join(lines))


def load_chain(name: str) -> DictConfig:
    """A chain by name (conf/chain/<name>.yaml, or chain/<name>.yaml in a config folder of yours) or by path."""
    path = find_chain(name)
    chain = OmegaConf.create(read_yaml(path, "Chain file"))
    if "stages" not in chain or not chain.stages:
        raise UserError(f"{path} has no stages.")
    return chain


def plan(
    chain: DictConfig, chain_dir: Path, common: list[str], per_stage: dict[str, list[str]], seeds: list[int] | None
) -> list[StageRun]:
    """Every run of the chain, in order, with its full command line."""
    names = list(chain.stages.keys())
    unknown = sorted(set(per_stage) - set(names))
    if unknown:
        raise UserError(f"Overrides name unknown stages {unknown}; stages of this chain: {names}.")
    runs: list[StageRun] = []
    seeded = {
        n: (seeds if seeds and chain.stages[n].get("seeds") else list(chain.stages[n].get("seeds") or []))
        for n in names
    }
    for index, name in enumerate(names):
        stage = chain.stages[name]
        for seed in seeded[name] or [None]:
            run_dir = chain_dir / name / (f"seed{seed}" if seed is not None else "")
            needs: list[Path] = []

            def locate(match: re.Match) -> str:
                ref = match.group(1)
                if ref not in names[:index]:
                    raise UserError(
                        f"Stage '{name}' refers to {{run:{ref}}}, which is not an earlier stage of the chain."
                    )
                if seeded[ref]:
                    if seed is None or seed not in seeded[ref]:
                        raise UserError(
                            f"Stage '{name}' needs the seeded stage '{ref}' but runs without a matching seed."
                        )
                    needs.append((chain_dir / ref / f"seed{seed}").resolve())
                    return str(chain_dir / ref / f"seed{seed}")
                needs.append((chain_dir / ref).resolve())
                return str(chain_dir / ref)

            overrides = [PLACEHOLDER.sub(locate, str(o)) for o in stage.get("overrides", [])]
            for ref in stage.get("needs") or []:  # an order without a path: `needs: [stage, ...]`
                if ref not in names[:index]:
                    raise UserError(f"Stage '{name}' needs '{ref}', which is not an earlier stage of the chain.")
                wanted = [seed] if seed is not None and seed in seeded[ref] else seeded[ref]
                needs += [(chain_dir / ref / f"seed{s}").resolve() for s in wanted] or [(chain_dir / ref).resolve()]
            if any(READS_CHAIN_DIR.search(str(o)) for o in stage.get("overrides", [])):
                needs = [r.run_dir for r in runs]  # `{run:x}/..` reads the chain dir: every earlier run
            overrides += common + per_stage.get(name, [])
            if seed is not None:
                overrides.append(f"seed={seed}")
            if "experiment" in stage:
                command = [sys.executable, "-m", "tasks.train", f"experiment={stage.experiment}"]
            elif "module" in stage:
                command = [sys.executable, "-m", str(stage.module)]
            else:
                raise UserError(f"Stage '{name}' needs 'experiment:' or 'module:'.")
            runs.append(
                StageRun(
                    name,
                    seed,
                    run_dir.resolve(),
                    command + overrides + [f"hydra.run.dir={run_dir.resolve()}"],
                    sorted(set(needs)),
                )
            )
    return runs


def routed_overrides(
    chain: DictConfig, chain_dir: Path, common: list[str], per_stage: dict[str, list[str]], seeds: list[int] | None
) -> dict[str, list[str]]:
    """Each stage's overrides: the chain-wide ones its config takes (tasks.studies.overrides), then its own."""
    first: dict[str, list[str]] = {}
    for run in plan(chain, chain_dir, [], per_stage, seeds) if common else []:
        first.setdefault(run.stage, run.command)
    routed = route(first, common)
    return {**per_stage, **{name: routed.get(name, []) + per_stage.get(name, []) for name in chain.stages}}


def run_key(run: StageRun) -> str:
    return run.stage + (f"/seed{run.seed}" if run.seed is not None else "")


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def jobs_and_threads(jobs: int | None, common: list[str]) -> tuple[int, int]:
    """How many runs go side by side, and each one's thread count. A thread count the user fixed
    (threads=, else OMP_NUM_THREADS) sets the default number of jobs to what fits the cores;
    otherwise the cores are shared among --jobs runs."""
    cores = available_cores()
    given = next((o.split("=", 1)[1] for o in reversed(common) if o.startswith("threads=")), None)
    fixed = given or os.environ.get("OMP_NUM_THREADS")
    if fixed is not None and fixed.isdigit() and int(fixed) > 0:
        return jobs or max(1, cores // int(fixed)), int(fixed)
    jobs = jobs or cores
    return jobs, max(1, cores // jobs)


def stage_jobs(chain_name: str, runs: list[StageRun], selected: set[str], threads: int | None) -> list[Job]:
    """One scheduler job per selected run, waiting for the selected runs it reads. A run of the
    shared layer's commands gets `threads=` (its thread count, in its config and summary)."""
    chosen = [r for r in runs if r.stage in selected]
    keys = {r.run_dir: run_key(r) for r in chosen}
    jobs = []
    for run in chosen:
        command = list(run.command)
        shared = command[1:3] in (["-m", "tasks.train"], ["-m", "tasks.eval"])
        if threads is not None and shared and not any(a.startswith("threads=") for a in command):
            command.insert(-1, f"threads={threads}")  # last but the run dir; a threads= of the user's stays
        deps = sorted({keys[d] for d in run.needs if d in keys})
        jobs.append(Job(run_key(run), chain_name, command, run.run_dir, deps))
    return jobs


def write_timing(chain_dir: Path, jobs: list[Job], max_jobs: int, threads: int | None, how: str, wall: float) -> None:
    """timing.json: each run's process seconds and its start-up (process seconds less the run's own
    wall time from its summary: imports, config checks, exit), with how the chain ran them."""
    runs = {}
    for job in jobs:
        if job.wall_s is None:
            continue
        own = json.loads((job.run_dir / "summary.json").read_text()).get("wall_time_s") if job.finished else None
        runs[job.key] = {"process_s": job.wall_s, "startup_s": job.wall_s - own if own is not None else None}
    record = {"jobs": max_jobs, "threads": threads, "launch": how, "wall_s": wall, "cores": available_cores()}
    write_text(chain_dir / "timing.json", json.dumps({**record, "runs": runs}, indent=2))


def execute(jobs: list[Job], max_jobs: int, threads: int | None, chain_dir: Path, fresh: bool = False) -> None:
    """Run the jobs side by side by their dependencies (tasks.studies.scheduler), each forked from
    this process once it imported the libraries (tasks.studies.forkserver; --fresh: a new
    interpreter each). A failed or killed run stops only the runs that need it; the others finish,
    then one error names what failed."""
    for job in jobs:
        if job.finished:
            print(f"=== chain stage {job.key} already finished: {job.run_dir}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads is not None:  # module stages without a `threads` key, and what they launch, take it from here
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    log_dir = chain_dir / "logs" if max_jobs > 1 else None  # side by side: one log per run
    if fresh or all(j.finished for j in jobs):
        launch = functools.partial(popen, own_group=False)
    else:
        preload()  # torch, Lightning, timm, diffusers, wandb: imported once, then each run forks from here
        launch = forked
    started = time.time()
    try:
        run_jobs(jobs, max_jobs, log_dir, env, cwd=Path.cwd(), launch=launch, grace_s=300.0)
    finally:
        write_timing(chain_dir, jobs, max_jobs, threads, "fresh" if fresh else "fork", time.time() - started)
    failed = [j for j in jobs if j.state not in ("done",)]
    if failed:
        lines = [
            f"  {j.key}: {j.state}"
            + (f" (exit code {j.exit_code})" if j.exit_code is not None else "")
            + f", files in {j.run_dir}"
            + (f", output in {j.log}" if j.log and j.state == "failed" else "")
            for j in failed
        ]
        raise UserError(
            "Chain stages did not finish:\n" + "\n".join(lines) + "\nFix the cause and re-run the same command "
            f"with --dir {chain_dir} to continue (finished stages are kept)."
        )


def hold_stages(chain_dir: Path, stages: set[str]) -> contextlib.ExitStack:
    """The lock of every stage this runner may run (tasks.run.lock), held until the returned stack
    closes: a second runner on the same chain dir stops at once if it would run one of them, and
    runners of disjoint stages (--stages) go side by side."""
    stack = contextlib.ExitStack()
    try:
        for stage in sorted(stages):
            stack.enter_context(
                holding(
                    chain_dir / f".writer-{stage}.lock",
                    f"Stage '{stage}' of chain dir {chain_dir}",
                    "Two chain runners must not run one stage: wait for that one to end (or stop it), "
                    "or run other stages with --stages.",
                )
            )
    except BaseException:
        stack.close()
        raise
    return stack


def comparison_tables(chain: DictConfig, runs: list[StageRun]) -> list[dict]:
    """The chain's `compare:` block as a list of tables. One table is `{metric, baseline,
    rows: {label: stage}, higher_is_better, title}`; several go under `compare.tables`."""
    compare = OmegaConf.to_container(chain.compare, resolve=True) if chain.get("compare") else {}
    tables = compare.pop("tables", None) or [compare]
    stages = list(dict.fromkeys(r.stage for r in runs))
    out = []
    for i, table in enumerate(tables):
        rows = table.get("rows") or {s: s for s in stages}
        if unknown := sorted(set(rows.values()) - set(stages)):
            raise UserError(
                f"compare table {i} names stages {unknown} that the chain does not have. Its stages: {stages}."
            )
        baseline = table.get("baseline")
        if baseline is not None and baseline not in rows:
            raise UserError(f"compare table {i}: baseline '{baseline}' is not one of its row labels {list(rows)}.")
        out.append(
            {
                "metric": table.get("metric", "test/acc"),
                "baseline": baseline,
                "rows": rows,
                "higher_is_better": bool(table.get("higher_is_better", True)),
                "title": table.get("title", ""),
            }
        )
    return out


def report(chain: DictConfig, runs: list[StageRun], chain_dir: Path, wall: float) -> dict:
    """The study tables of a finished chain (harness: CIs and paired differences), written to
    report.md / report.json / report.png (report_<i>.* for further tables) and printed."""
    summaries: dict[str, list[dict]] = {}
    for run in runs:
        if run.finished:
            summaries.setdefault(run.stage, []).append(json.loads((run.run_dir / "summary.json").read_text()))
    texts, tables = [], []
    for i, table in enumerate(comparison_tables(chain, runs)):
        groups = {label: summaries.get(stage, []) for label, stage in table["rows"].items()}
        rows = rows_from_summaries(groups, table["metric"], stages=table["rows"])
        name = "report" if i == 0 else f"report_{i}"
        text = write_study(
            chain_dir,
            rows,
            table["metric"],
            table["baseline"],
            name=name,
            title=table["title"],
            higher_is_better=table["higher_is_better"],
            label_header="stage",
        )
        texts.append((f"### {table['title']}\n\n" if table["title"] else "") + text)
        tables.append(json.loads((chain_dir / f"{name}.json").read_text()))
    write_text(chain_dir / "report.md", "\n".join(texts))
    result = {
        "chain": chain_dir.parent.name,
        "chain_dir": str(chain_dir),
        "wall_time_s": wall,
        "metric": tables[0]["metric"],
        "rows": tables[0]["rows"],
        "tables": tables,
        "stages": {r.stage + (f"/seed{r.seed}" if r.seed is not None else ""): str(r.run_dir) for r in runs},
    }
    write_text(chain_dir / "chain_summary.json", json.dumps(result, indent=2))
    print(f"\n=== chain {result['chain']} finished in {wall / 60:.1f} min: {chain_dir}\n" + "\n".join(texts))
    return result


@guarded("tasks.chain")
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "name", help="a chain in conf/chain/ or in your config folder's chain/, or a path to a chain file"
    )
    parser.add_argument("overrides", nargs="*", help="key=value for every stage, or <stage>:key=value for one")
    parser.add_argument(
        "--config-dir",
        default=None,
        help=f"a config folder of yours for the chain and every stage (added to {USER_CONFIG_ENV})",
    )
    parser.add_argument("--dir", default=None, help="chain dir (re-use one to continue an interrupted chain)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds for the seeded stages, e.g. 1,2,3")
    parser.add_argument(
        "--stages",
        default=None,
        help="comma-separated stages to run now; the others are skipped (the "
        "report comes once every stage has finished)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="stage runs side by side (those that do not need each other); default: one per core, each "
        "with cores/jobs threads (threads=<n> fixes every run's thread count, and so its numbers)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start each stage run in a fresh interpreter (by default each is forked from this process, "
        "which imported torch, Lightning, timm, diffusers and wandb once)",
    )
    parser.add_argument(
        "--launcher",
        default="local",
        choices=["local", "slurm", "submitit_local"],
        help="local: stages run here, --jobs at a time; slurm: one SLURM job per stage run, with "
        "dependencies, submitted through submitit; submitit_local: the same jobs as local processes",
    )
    parser.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="submitit/SLURM parameter for every job, e.g. partition=gpu, gpus_per_node=4, timeout_min=600 "
        "(a stage's own `slurm:` block in the chain YAML adds to these)",
    )
    args = parser.parse_intermixed_args(argv)
    working_dir_on_path()  # the stages' `_target_`s may name modules of this folder; preflight imports them
    try:
        if args.config_dir:
            if not Path(args.config_dir).is_dir():
                raise UserError(f"--config-dir names {Path(args.config_dir).resolve()}, which is not a folder.")
            add_env_config_dir(args.config_dir)  # the stages inherit it
        chain = load_chain(args.name)
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        chain_name = Path(args.name).stem
        chain_dir = Path(
            args.dir or Path(os.environ.get("KT_LOG_DIR", "logs")) / "chains" / chain_name / stamp
        ).resolve()
        common, per_stage = [], {}
        for override in args.overrides:
            stage, sep, rest = override.partition(":")
            if sep and "=" not in stage:
                per_stage.setdefault(stage, []).append(rest)
            else:
                common.append(override)
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
        max_jobs, threads = jobs_and_threads(args.jobs, common)
        runs = plan(chain, chain_dir, [], routed_overrides(chain, chain_dir, common, per_stage, seeds), seeds)
        selected = set(args.stages.split(",")) if args.stages else set(chain.stages)
        if unknown := selected - set(chain.stages):
            raise UserError(
                f"--stages names {sorted(unknown)}, which chain '{chain_name}' does not have. "
                f"Its stages: {list(chain.stages)}."
            )
        require_writable(chain_dir, "The chain dir", "Pass --dir <a folder you can write> (or set KT_LOG_DIR).")
        check_stage_commands([r.command for r in runs if not r.finished and r.stage in selected])  # before any write
        chain_dir.mkdir(parents=True, exist_ok=True)
        if args.launcher != "local":
            from tasks.studies.submit import submit_chain

            chain_argv = [args.name, *args.overrides] + (["--seeds", args.seeds] if args.seeds else [])
            submitted = submit_chain(
                chain, runs, chain_dir, chain_argv, args.launcher, args.slurm, selected, Path.cwd()
            )
            summary = chain_dir / "chain_summary.json"
            if args.launcher == "slurm" or not summary.is_file():
                print(
                    f"=== chain {chain_name} submitted: {chain_dir} "
                    "(the report job writes report.md when all stages are done)"
                )
                return submitted
            print(f"\n=== chain {chain_name} finished: {chain_dir}\n" + (chain_dir / "report.md").read_text())
            return json.loads(summary.read_text())
        start = time.time()
        with hold_stages(chain_dir, selected):
            execute(stage_jobs(chain_name, runs, selected, threads), max_jobs, threads, chain_dir, args.fresh)
        if left := sorted({run.stage for run in runs if not run.finished}):
            print(
                f"=== chain {chain_name}: stages {left} have not run yet; "
                f"run them with --dir {chain_dir} for the report"
            )
            return {"chain": chain_name, "chain_dir": str(chain_dir), "unfinished": left}
        return report(chain, runs, chain_dir, time.time() - start)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
