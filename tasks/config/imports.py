"""Importing what a `_target_` names, with one clear error: the module that cannot be imported
(ours, an installed one, or the user's own in the working folder) is named with its file and
the first line of its error; a missing name lists what the module has."""

from __future__ import annotations

import importlib
import importlib.util
import os
import types
from typing import Any

from tasks.errors import UserError


def _file_of(module: str) -> str:
    try:
        spec = importlib.util.find_spec(module)
    except Exception:  # a parent package that itself fails to import
        return "?"
    return str(spec.origin) if spec is not None and spec.origin else "?"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _own_names(obj: Any) -> list[str]:
    """The public names an object offers; for a module, those it defines (not what it imports)."""
    names = sorted(n for n in dir(obj) if not n.startswith("_"))
    if isinstance(obj, types.ModuleType):
        names = [n for n in names if getattr(getattr(obj, n), "__module__", None) == obj.__name__]
    return names


def locate(target: str, where: str) -> Any:
    """The object `target` ('package.module.Name') names; `where` (a config key) goes into the error."""
    parts = target.split(".")
    if not all(parts):
        raise UserError(f"{where}='{target}' is not a dotted path such as 'package.module.Name'.")
    obj, found = None, 0
    for i in range(1, len(parts) + 1):  # the shortest prefix first: an error then belongs to the module imported
        name = ".".join(parts[:i])
        try:
            obj, found = importlib.import_module(name), i
        except ModuleNotFoundError as err:
            if err.name == name:
                break  # no module of this name: the rest are attributes
            raise UserError(
                f"{where}='{target}': the module '{name}' ({_file_of(name)}) cannot be imported: "
                f"{_first_line(err)}. Install what it imports, or fix the module."
            ) from None
        except Exception as err:  # a syntax error, or any error raised while the module runs
            raise UserError(
                f"{where}='{target}': the module '{name}' ({_file_of(name)}) cannot be imported: "
                f"{_first_line(err)}. Fix the module."
            ) from None
    if not found:
        raise UserError(
            f"{where}='{target}': no module '{parts[0]}' can be imported: it is not installed, and the folder the "
            f"command runs in ({os.getcwd()}) has no {parts[0]}.py or {parts[0]}/. Fix the path in the config, "
            "run from your project's folder, or install your package."
        )
    for depth in range(found, len(parts)):
        if not hasattr(obj, parts[depth]):
            names = _own_names(obj)
            offered = f"{names[:40]}{' ...' if len(names) > 40 else ''}"
            raise UserError(
                f"{where}='{target}': '{'.'.join(parts[:depth])}' ({_file_of('.'.join(parts[:found]))}) has no "
                f"'{parts[depth]}'. It has: {offered}. Fix the name in the config."
            )
        obj = getattr(obj, parts[depth])
    return obj
