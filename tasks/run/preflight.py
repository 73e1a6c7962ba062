"""Checks the command line before Hydra runs it: composes the config once to turn Hydra's
errors into one message with the fix, and maps `resume=` to the run dir to continue."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tasks.errors import UserError
from tasks.run.resume import resume_run_dir

_PASS_THROUGH_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--version",
                       "--shell-completion", "-sc", "--resolve", "-p", "--package"}
_PLUGINS = {
    "submitit": "the SLURM/submitit launcher needs the cluster extra: pip install -e '.[cluster]'",
    "optuna": "the Optuna sweeper needs the sweep extra: pip install -e '.[sweep]'",
}


def _explain(err: Exception, cfg_dir: Path, overrides: list[str]) -> str:
    text = str(err) + (f"\n{err.__cause__}" if err.__cause__ else "")
    for plugin, fix in _PLUGINS.items():
        if plugin in text and ("Could not find" in text or "Could not load" in text or "not found" in text):
            return f"{text.splitlines()[0]}\nFix: {fix}."
    match = re.search(r"full_key: (\S+)", text) or re.search(r"Could not override '([^']+)'", text)
    if match and "not in struct" in text:
        full_key = match.group(1)
        parent, _, leaf = full_key.rpartition(".")
        try:
            with initialize_config_dir(str(cfg_dir), version_base="1.3"):
                base = compose("train", overrides=[o for o in overrides if not o.split("=")[0].lstrip("+~").startswith(full_key)])
            options = list((OmegaConf.select(base, parent) if parent else base).keys())
        except Exception:
            options = []
        finally:
            GlobalHydra.instance().clear()
        close = difflib.get_close_matches(leaf, [str(o) for o in options], n=3, cutoff=0.6)
        hint = f" Did you mean '{(parent + '.') if parent else ''}{close[0]}'?" if close else ""
        return (f"Unknown config key '{full_key}'.{hint} Valid keys under '{parent or '<root>'}': {sorted(map(str, options))}. "
                f"(To add a new key on purpose, prefix it with '+'.)")
    return text.split("\nSet the environment variable HYDRA_FULL_ERROR")[0].strip()


def preflight(argv: list[str], cfg_dir: Path) -> list[str]:
    """Return argv, with `hydra.run.dir=` added when `resume=` continues an existing run."""
    args = argv[1:]
    if any(a.split("=")[0] in _PASS_THROUGH_FLAGS for a in args):
        return argv
    overrides = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:
        raise UserError(f"Cannot parse the command line: {str(err).splitlines()[0]}") from None
    single = [o.input_line for o in parsed if not o.is_sweep_override()]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(cfg_dir), version_base="1.3"):
            cfg = compose("train", overrides=single, return_hydra_config=True)
    except Exception as err:
        raise UserError(_explain(err, cfg_dir, single)) from None
    finally:
        GlobalHydra.instance().clear()
    multirun = "-m" in args or "--multirun" in args or cfg.hydra.mode == "MULTIRUN"
    explicit_dir = any(o.key_or_group == "hydra.run.dir" for o in parsed)
    resume = cfg.get("resume")
    if resume and not multirun and not explicit_dir:
        runs_root = Path(cfg.paths.log_dir) / str(cfg.task_name) / "runs"
        run_dir = resume_run_dir(str(resume), runs_root)
        if run_dir is not None:
            return argv + [f"hydra.run.dir={run_dir}"]
    return argv
