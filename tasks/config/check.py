"""Start-up validation of a composed config, before anything is written: every `_target_`
imports, takes the keys it is given, gets its required ones, and every value has the type,
range and choice its signature allows (tasks/config/schema.py); the plain keys of each command
(train.yaml's seed, resume, monitor ...; a stage app's keys) match their dataclass schema
(tasks/config/command_schemas.py, or one a package registers); mandatory values are set.
Errors name the key and the fix."""

from __future__ import annotations

import difflib
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, OmegaConfBaseException

from tasks.config import schema
from tasks.config.imports import locate
from tasks.errors import UserError

# Keys that train.py passes at instantiation time rather than from the config.
_INJECTED = {"callbacks", "logger"}


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _check_target(path: str, node: dict) -> None:
    target = str(node["_target_"])
    locate(target, f"{path}._target_")  # a module that cannot be imported is named, with its error's first line
    sig = schema.signature_of(target)
    if sig is None:
        return
    schema.check_mapping(path, node, target, _suggest)
    if not node.get("_partial_", False):
        missing = [n for n, p in sig.params.items() if p.required and n not in node and n not in _INJECTED]
        if missing:
            raise UserError(f"'{path}' ({target}) needs {missing}. Set them, e.g. {path}.{missing[0]}=<value>.")


def _walk(path: str, node: Any) -> None:
    if isinstance(node, dict):
        if "_target_" in node:
            _check_target(path, node)
        for key, value in node.items():
            _walk(f"{path}.{key}", value)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _walk(f"{path}[{i}]", item)


def _resolved(cfg: DictConfig, key: str) -> Any:
    try:
        node = cfg[key]
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node
    except (InterpolationResolutionError, MissingMandatoryValue, OmegaConfBaseException) as err:
        raise UserError(f"Config '{key}' cannot be resolved: {err}".split("\n")[0]) from None


def check_config(
    cfg: DictConfig,
    sections: tuple[str, ...] = ("data", "model", "trainer", "callbacks", "logger"),
    command: str | None = None,
) -> None:
    """Raise a UserError for the first mistake found in the instantiable sections, and (with
    `command`, a config name such as 'train') in that command's plain keys."""
    for key in OmegaConf.missing_keys(cfg):
        if not key.startswith("hydra"):
            raise UserError(f"'{key}' must be set (it is '???' in the config). Add {key}=<value> to the command.")
    if command is not None:  # the plain keys first: `seed=-1` is about seed, not data.seed
        from tasks.config.command_schemas import command_schema

        found = command_schema(command)
        if found is not None:
            plain = schema.qualified(found)
            keys = [k for k in schema.signature_of(plain).params if k in cfg]
            schema.check_mapping("", {k: _resolved(cfg, k) for k in keys}, plain, _suggest, known_only=True)
    for section in sections:
        if section not in cfg or cfg[section] is None:
            continue
        _walk(section, _resolved(cfg, section))


def check_command(cfg: DictConfig, command: str) -> None:
    """The whole check of one command's composed config (its sections and its plain keys)."""
    from tasks.config.command_schemas import command_sections

    check_config(cfg, command_sections(command), command)


def check_node(path: str, node: dict, target: str, known_only: bool = False) -> None:
    """The typed check of one plain mapping against `target` (a callable or a dataclass), for
    code that reads a config node itself (a teacher spec, a zoo member)."""
    schema.check_mapping(path, node, target, _suggest, known_only=known_only)
