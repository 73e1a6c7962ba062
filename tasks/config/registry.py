"""What installed packages register through entry points in their pyproject.toml, so the shared
layer names no method:

    [project.entry-points."kt.cards"]     <kind> = "<module>:<loader of a Card>"   (tasks/io/cards.py)
    [project.entry-points."kt.schemas"]   "<config name>" = "<module>:<dataclass of its plain keys>"
    [project.entry-points."kt.apps"]      "<config name>" = "<module a chain runs with python -m>"

A schema's class attribute `sections` names the config sections that hold `_target_` nodes
(tasks/config/command_schemas.py has train's and eval's). Reinstall the package
(pip install -e .) after adding one."""

from __future__ import annotations

from functools import cache
from importlib import metadata

CARDS, SCHEMAS, APPS = "kt.cards", "kt.schemas", "kt.apps"


@cache
def _groups() -> dict[str, dict[str, metadata.EntryPoint]]:
    """Every installed distribution's entry points by group (not only the first copy of each
    distribution on sys.path: a stale egg-info in the working directory would hide a fresh install's)."""
    found: dict[str, dict[str, metadata.EntryPoint]] = {}
    for dist in metadata.distributions():
        for ep in dist.entry_points:
            found.setdefault(ep.group, {}).setdefault(ep.name, ep)
    return found


def entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    return _groups().get(group, {})


def command_schema(config_name: str) -> type | None:
    """The registered schema of a command's plain keys (e.g. a stage app's), or None."""
    ep = entry_points(SCHEMAS).get(config_name)
    return ep.load() if ep is not None else None


def stage_apps() -> dict[str, str]:
    """`python -m <module>` Hydra apps -> the config name each composes."""
    return {ep.value: name for name, ep in entry_points(APPS).items()}
