"""Checks the command line before Hydra runs it: composes the config once (every job of a
sweep; a single run then runs on that very config, tasks/run/launch.py), turns Hydra's errors
into one message with the fix, checks every `_target_` node and the command's plain keys
(tasks.config.check), checks that every place the command writes can be written
(tasks.io.places), and maps `resume=` to the run dir to continue. Nothing is written before
these checks pass."""

from __future__ import annotations

import copy
import difflib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from tasks.config.folders import check_folders, config_folders, unknown_option
from tasks.config.location import CONFIG_SOURCE
from tasks.errors import UserError
from tasks.io.places import check_places, require_writable
from tasks.run.resume import resume_run_dir

_PASS_THROUGH_FLAGS = {
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--cfg",
    "-c",
    "--version",
    "--shell-completion",
    "-sc",
    "--resolve",
    "-p",
    "--package",
}
# Flags after which Hydra composes the config itself: the task still checks it (tasks.config.check) before it runs.
_HYDRA_COMPOSES = {"--config-name", "-cn", "--config-path", "-cp", "--experimental-rerun"}
_PLUGINS = {
    "submitit": "the SLURM/submitit launcher needs the cluster extra: pip install -e '.[cluster]'",
    "optuna": "the Optuna sweeper needs the sweep extra: pip install -e '.[sweep]'",
}
MAX_SWEEP_CHECKS = 64  # beyond this many jobs, every swept value is checked once


def _compose(
    cfg_dir: Path | str,
    config_name: str,
    overrides: list[str],
    job_name: str | None = None,
    config_dir: str | None = None,
) -> DictConfig:
    """Compose as the command's Hydra app does: its primary config source (pkg://tasks.conf, or a
    folder), KT_CONFIG_DIR's folders (the plugin in hydra_plugins/) and --config-dir."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    GlobalHydra.instance().clear()
    version.setbase("1.3")
    search_path = create_config_search_path(str(cfg_dir))
    if config_dir:  # where Hydra's own --config-dir puts it
        path = f"file://{Path(config_dir).expanduser().resolve()}"
        search_path.prepend("command-line", path, anchor=SearchPathQuery(provider="schema"))
    try:
        Hydra.create_main_hydra2(task_name=job_name or "app", config_search_path=search_path)
        return compose(config_name, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _searchpath(overrides: list[str]) -> list[str]:
    """The folders of a hydra.searchpath=[...] override (the last one, as Hydra reads it)."""
    found: list[str] = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.get_key_element() == "hydra.searchpath" and isinstance(override.value(), list):
            found = [str(v) for v in override.value()]
    return found


def _declared_keys(base: DictConfig, parent: str, command: str) -> list[str]:
    """Keys the schema or the `_target_` of node `parent` accepts, beyond those in the config."""
    from tasks.config import schema
    from tasks.config.command_schemas import command_schema

    node = OmegaConf.select(base, parent) if parent else base
    try:
        if isinstance(node, DictConfig) and "_target_" in node:
            sig = schema.signature_of(str(node._target_))
            return sorted(sig.params) if sig else []
        grand, _, key = parent.rpartition(".")
        above = OmegaConf.select(base, grand) if grand else base
        if isinstance(above, DictConfig) and "_target_" in above:
            forward = schema.keywords_of(str(above._target_), key)
            return sorted(schema.signature_of(forward).params) if forward else []
        current: type | None = command_schema(command)
        parts = [p for p in parent.split(".") if p]
        while parts and current is not None:
            sig = schema.signature_of(schema.qualified(current))
            param = sig.params.get(parts.pop(0)) if sig else None
            found = schema._schema_of(param.annotation) if param else None
            if found is None:
                return []
            how, current = found
            if how == "each":
                if not parts:
                    return []
                parts.pop(0)  # the member name
        if current is None or parts:
            return []
        return sorted(schema.signature_of(schema.qualified(current)).params)
    except Exception:  # a hint only: never fail the explanation itself
        return []


def _explain(
    err: Exception, cfg_dir: Path | str, overrides: list[str], config_name: str = "train", config_dir: str | None = None
) -> str:
    from hydra.errors import MissingConfigException

    text = str(err) + (f"\n{err.__cause__}" if err.__cause__ else "")
    for plugin, fix in _PLUGINS.items():
        if plugin in text and ("Could not find" in text or "Could not load" in text or "not found" in text):
            return f"{text.splitlines()[0]}\nFix: {fix}."
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and "/" in err.missing_cfg_file:
        return unknown_option(err.missing_cfg_file, config_folders(config_dir, _searchpath(overrides)))
    match = re.search(r"full_key: (\S+)", text) or re.search(r"Could not override '([^']+)'", text)
    if match and "not in struct" in text:
        full_key = match.group(1)
        parent, _, leaf = full_key.rpartition(".")
        given = next((o for o in overrides if o.split("=")[0].lstrip("+~") == full_key), f"{full_key}=<value>")
        try:
            others = [o for o in overrides if not o.split("=")[0].lstrip("+~").startswith(full_key)]
            base = _compose(cfg_dir, config_name, others, config_dir=config_dir)
            options = [str(o) for o in (OmegaConf.select(base, parent) if parent else base).keys()]
            declared = _declared_keys(base, parent, config_name)
        except Exception:
            options, declared = [], []
        if leaf in declared:
            return (
                f"'{leaf}' is a valid key of '{parent}' but this config does not set it yet, so it cannot be "
                f"overridden. Add it with a '+': +{given.lstrip('+~')}"
            )
        close = difflib.get_close_matches(leaf, sorted(set(options) | set(declared)), n=3, cutoff=0.6)
        hint = f" Did you mean '{(parent + '.') if parent else ''}{close[0]}'?" if close else ""
        return (
            f"Unknown config key '{full_key}'.{hint} Valid keys under '{parent or '<root>'}': {sorted(options)}. "
            f"(To add a new key on purpose, prefix it with '+'.)"
        )
    return text.split("\nSet the environment variable HYDRA_FULL_ERROR")[0].strip()


def sweep_jobs(parsed: list, max_jobs: int = MAX_SWEEP_CHECKS) -> list[list[str]]:
    """Override lists to check for a command line: one per job of a choice/range sweep (every
    swept value at least once when there are more jobs); swept intervals (Optuna) are skipped."""
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    swept = []
    for override in parsed:
        if not override.is_sweep_override():
            continue
        try:
            values = [f"{override.get_key_element()}={v}" for v in override.sweep_string_iterator()]
        except Exception:  # interval() sweeps have no list of values
            continue
        swept.append(values)
    if not swept:
        return [fixed]
    total = 1
    for values in swept:
        total *= len(values)
    if total <= max_jobs:
        return [fixed + list(combo) for combo in itertools.product(*swept)]
    firsts = [values[0] for values in swept]
    jobs = []
    for i, values in enumerate(swept):
        for value in values:
            jobs.append(fixed + firsts[:i] + [value] + firsts[i + 1 :])
    return jobs


def _with_output_dir(cfg: DictConfig, multirun: bool) -> DictConfig:
    """The composed config with hydra.runtime.output_dir set, so ${hydra:...} resolves."""
    with open_dict(cfg):
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "preflight"
        out = f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}" if multirun else str(cfg.hydra.run.dir)
        cfg.hydra.runtime.output_dir = out
    HydraConfig.instance().set_config(cfg)
    return cfg


def check_jobs(
    cfg_dir: Path | str,
    config_name: str,
    jobs: list[list[str]],
    multirun: bool,
    first: DictConfig,
    config_dir: str | None = None,
) -> None:
    from tasks.config.check import check_command

    for i, overrides in enumerate(jobs):
        try:
            cfg = first if i == 0 else _compose(cfg_dir, config_name, overrides, config_dir=config_dir)
        except Exception as err:
            raise UserError(_explain(err, cfg_dir, overrides, config_name, config_dir)) from None
        cfg = _with_output_dir(cfg, multirun)
        try:
            check_command(cfg, config_name)
            if i == 0:
                check_places(cfg, multirun)
        except UserError as err:
            swept = [o for o in overrides if o not in jobs[0]] if len(jobs) > 1 else []
            raise UserError(f"{err}{f' (in the sweep job with {swept})' if swept else ''}") from None
        finally:
            HydraConfig.instance().cfg = None  # Hydra sets its own when the app starts


@dataclass
class Checked:
    """What preflight hands on: the command line to run, and the composed config of a single
    run (None for a sweep or a Hydra flag such as --cfg, which Hydra composes itself)."""

    argv: list[str]
    config: DictConfig | None
    resume: str | None = None  # the run's resume= (resume=auto chose its run dir)


def hydra_arguments(args: list[str]):
    """The command line as Hydra's own parser reads it: overrides, --config-dir, --multirun, ..."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(args)


def preflight_config(
    argv: list[str], cfg_dir: Path | str = CONFIG_SOURCE, config_name: str = "train", job_name: str | None = None
) -> Checked:
    """Compose and check the command line once; with `resume=`, the run dir to continue is set."""
    args = argv[1:]
    if any(a.split("=")[0] in _PASS_THROUGH_FLAGS | _HYDRA_COMPOSES for a in args):
        return Checked(argv, None)
    hydra_args = hydra_arguments(args)
    overrides, config_dir = list(hydra_args.overrides), hydra_args.config_dir
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:
        raise UserError(f"Cannot parse the command line: {str(err).splitlines()[0]}") from None
    check_folders(config_folders(config_dir, _searchpath(overrides)))
    jobs = sweep_jobs(parsed)
    try:
        cfg = _compose(cfg_dir, config_name, jobs[0], job_name, config_dir)
    except Exception as err:
        raise UserError(_explain(err, cfg_dir, jobs[0], config_name, config_dir)) from None
    multirun = hydra_args.multirun or cfg.hydra.mode == "MULTIRUN"
    composed = None if multirun else copy.deepcopy(cfg)  # the checks below fill in preflight's output dir
    check_jobs(cfg_dir, config_name, jobs if multirun else jobs[:1], multirun, cfg, config_dir)
    explicit_dir = any(o.key_or_group == "hydra.run.dir" for o in parsed)
    resume = cfg.get("resume") if config_name == "train" else None
    if resume and not multirun:
        check_resume_file(str(resume))
        if not explicit_dir:
            runs_root = Path(cfg.paths.log_dir) / str(cfg.task_name) / "runs"
            run_dir = resume_run_dir(str(resume), runs_root)
            if run_dir is not None:
                require_writable(run_dir, "The run dir to continue", "Make it writable, or start a new run.")
                override = f"hydra.run.dir={run_dir}"
                with open_dict(composed):
                    composed.hydra.run.dir = str(run_dir)
                    composed.hydra.overrides.hydra.append(override)
                return Checked(argv + [override], composed, str(resume))
    return Checked(argv, composed, str(resume) if resume else None)


def preflight(argv: list[str], cfg_dir: Path | str = CONFIG_SOURCE, config_name: str = "train") -> list[str]:
    """Return argv, with `hydra.run.dir=` added when `resume=` continues an existing run."""
    return preflight_config(argv, cfg_dir, config_name).argv


def check_resume_file(resume: str) -> None:
    """A `resume=<file>` must be a PyTorch checkpoint (told by its first bytes; the whole
    file is read, weights only, when the run starts)."""
    from tasks.io import files

    path = Path(resume).expanduser()
    if resume == "auto" or path.is_dir() or not path.exists():
        return
    kind = files.what_is(path)
    if not kind.startswith(("a zip archive (PyTorch", "a Python pickle")):
        raise UserError(
            f"resume={resume}: {path} is corrupt or not a PyTorch checkpoint: it is {kind}. "
            "Point resume= at a run dir, its checkpoints/last.ckpt, or use resume=auto."
        )


# The shared layer's own `python -m <module>` Hydra apps; the methods register theirs (kt.apps).
SHARED_APPS = {"tasks.train": "train", "tasks.eval": "eval"}


def check_stage_commands(commands: list[list[str]], cfg_dir: Path | str = CONFIG_SOURCE) -> None:
    """The checks of `preflight` for every stage command of a chain before the first one
    runs: a wrong key or value in any stage stops the chain before anything is written."""
    from tasks.config.registry import stage_apps

    apps = {**SHARED_APPS, **stage_apps()}
    seen = set()
    for command in commands:
        if len(command) > 2 and command[1] == "-m":
            config_name, args = apps.get(command[2]), command[3:]
        else:
            config_name, args = ("train" if command[1].endswith("train.py") else None), command[2:]
        if config_name is None:
            continue
        key = (config_name, tuple(a for a in args if not a.startswith(("seed=", "hydra.run.dir=", "resume="))))
        if key in seen:
            continue
        seen.add(key)
        preflight(["chain-stage", *[a for a in args if not a.startswith("resume=")]], cfg_dir, config_name)
