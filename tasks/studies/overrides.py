"""Chain-wide overrides go to the stages that take them. `python -m tasks.chain <name>
trainer.max_epochs=1` gives `trainer.max_epochs=1` to every stage whose composed config has the key
`trainer.max_epochs` (a group override such as `trainer=ddp_cpu` to every stage with that config
group; `hydra.*` to every Hydra stage); the others (an oracle app without a trainer, a report
module that is no Hydra app) run without it. An
override that no stage takes is one error naming the stages and their apps."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from tasks.config.location import CONFIG_SOURCE
from tasks.errors import UserError

_MISSING = object()


def app_of(command: list[str], apps: dict[str, str]) -> tuple[str | None, list[str]]:
    """The config name of a stage's command (`python -m <module> ...`) and its Hydra arguments."""
    if len(command) > 2 and command[1] == "-m":
        return apps.get(command[2]), command[3:]
    return ("train" if command[1].endswith("train.py") else None), command[2:]


def takes(cfg: DictConfig, override: str) -> bool:
    """Whether a composed stage config has the key (or config group) that `override` sets."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(override)
    key = parsed.key_or_group
    if key.split(".")[0] == "hydra":
        return True
    if key in (cfg.hydra.runtime.choices or {}):  # a config group: trainer=ddp_cpu, logger=csv, ...
        return True
    if parsed.is_add() or parsed.is_force_add():  # +a.b=v adds under a section the stage must have
        parent = key.rpartition(".")[0]
        return not parent or OmegaConf.select(cfg, parent, default=_MISSING) is not _MISSING
    return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False) is not _MISSING


def route(stage_commands: dict[str, list[str]], common: list[str], cfg_dir=CONFIG_SOURCE) -> dict[str, list[str]]:
    """For each stage (by its first run's command, placeholders filled), the chain-wide overrides it takes."""
    from tasks.config.registry import stage_apps
    from tasks.run.preflight import SHARED_APPS, _compose, _explain

    if not common:
        return {stage: [] for stage in stage_commands}
    apps = {**SHARED_APPS, **stage_apps()}
    routed: dict[str, list[str]] = {}
    described: list[str] = []
    composed: list[tuple[str, list[str], DictConfig]] = []
    for stage, command in stage_commands.items():
        config_name, args = app_of(command, apps)
        described.append(f"{stage} ({config_name or ' '.join(command[1:3])})")
        if config_name is None:  # a plain module (a report over the chain dir): it has no config to take them
            routed[stage] = []
            continue
        own = [a for a in args if not a.startswith(("seed=", "hydra.run.dir=", "resume="))]
        try:
            cfg = _compose(cfg_dir, config_name, own)
        except Exception as err:  # the stage's own overrides are wrong: preflight names them
            raise UserError(f"Stage '{stage}': {_explain(err, cfg_dir, own, config_name)}") from None
        composed.append((config_name, own, cfg))
        routed[stage] = [o for o in common if takes(cfg, o)]
    if unused := [o for o in common if not any(o in taken for taken in routed.values())]:
        hints = [why_not(o, composed, cfg_dir) for o in unused]
        raise UserError(
            f"No stage of this chain takes {unused}: {' '.join(h for h in hints if h)} The stages and their "
            f"apps: {', '.join(described)}. Give it to one stage as <stage>:key=value, or fix the key."
        )
    return routed


def why_not(override: str, composed: list[tuple[str, list[str], DictConfig]], cfg_dir) -> str:
    """Preflight's own explanation (a close key, the valid ones) from the first stage that has the
    override's section, else from the first stage."""
    from tasks.run.preflight import _compose, _explain

    section = override.lstrip("+~").split("=")[0].split(".")[0]
    ordered = sorted(composed, key=lambda c: section not in c[2])  # stable: the first stage with it
    if not ordered:
        return ""
    config_name, own, _ = ordered[0]
    try:
        _compose(cfg_dir, config_name, [*own, override])
    except Exception as err:
        return _explain(err, cfg_dir, [*own, override], config_name)
    return ""
