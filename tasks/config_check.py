"""Start-up validation of a composed config: every `_target_` imports, takes the keys it is
given, and gets its required ones; mandatory values are set. Errors name the fix."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from tasks.errors import UserError

_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# Keys that train.py passes at instantiation time rather than from the config.
_INJECTED = {"callbacks", "logger"}


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _check_target(path: str, node: DictConfig) -> None:
    target = node._target_
    try:
        obj = get_object(target)
    except Exception as err:  # ImportError, AttributeError, ...
        raise UserError(f"{path}._target_='{target}' cannot be imported ({err}). Fix the class path in the config.") from None
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in node.keys():
        if key not in _HYDRA_KEYS and key not in accepted:
            raise UserError(
                f"Unknown config key '{path}.{key}': {target} does not take '{key}'.{_suggest(str(key), accepted)} "
                f"Valid keys of '{path}': {sorted(accepted)}."
            )
    if not node.get("_partial_", False):
        required = [n for n, p in params.items() if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        missing = [n for n in required if n not in node and n not in _INJECTED and n != "self"]
        if missing:
            raise UserError(f"'{path}' ({target}) needs {missing}. Set them, e.g. {path}.{missing[0]}=<value>.")


def _walk(path: str, node: Any) -> None:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            _check_target(path, node)
        for key, value in node.items():
            _walk(f"{path}.{key}", value)
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _walk(f"{path}[{i}]", item)


def check_config(cfg: DictConfig, sections: tuple[str, ...] = ("data", "model", "trainer", "callbacks", "logger")) -> None:
    """Raise a UserError for the first mistake found in the instantiable sections."""
    for key in OmegaConf.missing_keys(cfg):
        if not key.startswith("hydra"):
            raise UserError(f"'{key}' must be set (it is '???' in the config). Add {key}=<value> to the command.")
    for section in sections:
        if section not in cfg or cfg[section] is None:
            continue
        try:
            node = OmegaConf.to_container(cfg[section], resolve=True)
        except (InterpolationResolutionError, MissingMandatoryValue) as err:
            raise UserError(f"Config '{section}' cannot be resolved: {err}".split("\n")[0]) from None
        _walk(section, OmegaConf.create(node))
