"""Typed checks of config values against the signature of the `_target_` they are given to
(or a dataclass schema for keys without a target): the type, the range and the allowed
choices, as the signature declares them (`Literal[...]`, `Annotated[..., Range | Choices |
Pattern | KeywordsOf]`, tasks/config/types.py), or as tasks/config/rules.py says for library
signatures. One message names the key, the value and what is expected."""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import inspect
import os
import pathlib
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, Union

from tasks.config.types import (  # noqa: F401  (re-exported: modules annotate with them)
    AT_LEAST_ONE,
    COUNT,
    POSITIVE,
    PROBABILITY,
    UNBOUNDED_OR_COUNT,
    Choices,
    KeywordsOf,
    Pattern,
    Range,
)
from tasks.errors import UserError

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
UNCHECKED = object()  # an annotation that cannot be resolved: any value passes


# --- signatures -----------------------------------------------------------------------------
@dataclass
class Param:
    name: str
    annotation: Any
    required: bool
    owner: str  # the qualified name of the callable that declares it


@dataclass
class Signature:
    target: str
    params: dict[str, Param]
    open_kwargs: bool  # some **kwargs go where no signature tells (e.g. timm's model kwargs)


def qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _hints(fn: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # a name only imported under TYPE_CHECKING: resolve what can be resolved
        raw = getattr(fn, "__annotations__", {}) or {}
        space = dict(getattr(inspect.unwrap(fn), "__globals__", {}))
        space.update(vars(typing))
        out = {}
        for key, value in raw.items():
            try:
                out[key] = eval(value, space) if isinstance(value, str) else value  # noqa: S307 (project annotations)
            except Exception:
                out[key] = UNCHECKED
        return out


def _own_params(fn: Callable, owner: str) -> tuple[dict[str, Param], bool, bool]:
    """Named parameters of `fn`, whether it takes **kwargs, and whether it takes *args."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}, True, True
    hints = _hints(fn)
    params, var_kw, var_pos = {}, False, False
    for name, p in sig.parameters.items():
        if name == "self":
            continue
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is p.VAR_POSITIONAL:
            var_pos = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            annotation = hints.get(name, p.annotation)
            params[name] = Param(name, UNCHECKED if annotation is p.empty else annotation, p.default is p.empty, owner)
    return params, var_kw, var_pos


@cache
def signature_of(target: str) -> Signature | None:
    """The keyword parameters `target` accepts. A class whose __init__ takes **kwargs and
    hands them to its base class (DigitsDataModule -> ImageDataModule) is followed up its
    MRO, so those keys are checked too."""
    from hydra.utils import get_object

    obj = get_object(target)
    if dataclasses.is_dataclass(obj) and isinstance(obj, type):
        hints = _hints(obj)
        params = {
            f.name: Param(
                f.name,
                hints.get(f.name, UNCHECKED),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                target,
            )
            for f in dataclasses.fields(obj)
        }
        return Signature(target, params, False)
    if not isinstance(obj, type):
        if not callable(obj):
            return None
        params, var_kw, _ = _own_params(obj, target)
        return Signature(target, params, var_kw)
    params: dict[str, Param] = {}
    open_kwargs = True
    first = True
    for cls in obj.__mro__:
        if cls is object:
            break
        if "__init__" not in vars(cls):
            continue
        own, var_kw, _ = _own_params(cls.__init__, qualified(cls))
        for name, p in own.items():
            if not first:  # reached through **kwargs: the subclass may pass it itself (save_dir -> root_dir)
                p.required = False
            params.setdefault(name, p)
        first = False
        if not var_kw:
            open_kwargs = False
            break
    if "__init__" not in {k for c in obj.__mro__ if c is not object for k in vars(c)}:
        params, open_kwargs = {}, True
    return Signature(target, params, open_kwargs)


# --- values against annotations -----------------------------------------------------------
def _is_target_node(value: Any) -> bool:
    return isinstance(value, dict) and "_target_" in value


def conforms(value: Any, annotation: Any) -> bool:
    """Whether a plain config value (after resolution) fits a type annotation."""
    if annotation is UNCHECKED or annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return conforms(value, args[0])
    if annotation is None or annotation is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is Literal:
        whole = isinstance(value, int) and not isinstance(value, bool)
        return any(value == a and type(value) is type(a) for a in args) or (
            whole and any(type(a) is float and value == a for a in args)
        )
    if _is_target_node(value):
        return _target_may_fit(value, annotation)
    if isinstance(annotation, (typing.TypeVar, typing.ForwardRef, str)):
        return True
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is complex:
        return isinstance(value, (int, float, complex)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (pathlib.Path, os.PathLike, pathlib.PurePath):
        return isinstance(value, str)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return any(value in (m.name, m.value) for m in annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return isinstance(value, dict)  # its keys are checked against the dataclass
    container = origin or annotation
    if container in (list, tuple, cabc.Sequence, cabc.MutableSequence, cabc.Iterable, cabc.Collection, set, frozenset):
        if not isinstance(value, (list, tuple)):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(conforms(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(conforms(v, item) for v in value)
    if container in (dict, cabc.Mapping, cabc.MutableMapping):
        if not isinstance(value, dict):
            return False
        key_t, value_t = (args + (Any, Any))[:2] if args else (Any, Any)
        return all(conforms(k, key_t) and conforms(v, value_t) for k, v in value.items())
    if container in (cabc.Callable, Callable) or origin is cabc.Callable:
        return False  # a plain value is not callable; a _target_ node is handled above
    if isinstance(annotation, type):
        if annotation.__module__ == "torch" and annotation.__name__ in ("Tensor", "device", "dtype"):
            return isinstance(value, (int, float, str)) and not isinstance(value, bool)
        return isinstance(value, annotation)
    return True


def _target_may_fit(node: dict, annotation: Any) -> bool:
    """A `_target_` node builds an object: it fits any annotation but a plain value type."""
    plain = (bool, int, float, str, type(None))
    if annotation in plain:
        return False
    from hydra.utils import get_object

    try:
        obj = get_object(str(node["_target_"]))
    except Exception:
        return True  # reported by the import check
    if isinstance(annotation, type) and isinstance(obj, type) and not node.get("_partial_"):
        return issubclass(obj, annotation) or annotation.__module__ == "builtins"
    return True


def describe(annotation: Any) -> str:
    """An annotation in words: "an integer or null", "one of ['min', 'max']"."""
    if annotation is None or annotation is type(None):
        return "null"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return describe(args[0])
    if origin in (Union, types.UnionType):
        literals = [v for a in args if typing.get_origin(a) is Literal for v in typing.get_args(a)]
        others = [describe(a) for a in args if typing.get_origin(a) is not Literal and a is not type(None)]
        parts = ([f"one of {literals}"] if literals else []) + others
        text = " or ".join(dict.fromkeys(parts))
        return text + (" or null" if type(None) in args else "")
    if origin is Literal:
        return f"one of {list(args)}"
    names = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        pathlib.Path: "a path",
        complex: "a number",
    }
    if annotation in names:
        return names[annotation]
    container = origin or annotation
    if container in (list, tuple, cabc.Sequence, cabc.MutableSequence, cabc.Iterable, set, frozenset):
        if container is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
        return f"a list of {describe(args[0]) if args else 'values'}".replace("a list of an ", "a list of ")
    if container in (dict, cabc.Mapping, cabc.MutableMapping):
        return "a mapping"
    if container in (cabc.Callable, Callable):
        return "a _target_ node (a callable)"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return f"one of {[m.name for m in annotation]}"
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return f"a mapping of {annotation.__name__} keys"
    if isinstance(annotation, type):
        return f"a _target_ node that builds a {annotation.__name__}"
    return str(annotation)


def _shown(value: Any) -> str:
    if _is_target_node(value):
        return f"a _target_ node ({value['_target_']})"
    if isinstance(value, str):
        return f"'{value}' (a string)"
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return f"{list(value)} (a list)"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)


def _metadata(annotation: Any, kind: type) -> Any:
    """The first `kind` object in the Annotated[...] metadata of an annotation (or of a
    member of its Optional/Union)."""
    if typing.get_origin(annotation) is typing.Annotated:
        found = [m for m in typing.get_args(annotation)[1:] if isinstance(m, kind)]
        if found:
            return found[0]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _metadata(arg, kind)
            if found is not None:
                return found
    return None


def _schema_of(annotation: Any) -> tuple[str, type] | None:
    """("one", dataclass) for a dataclass field, ("each", dataclass) for dict[str, dataclass]."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _schema_of(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _schema_of(arg)
            if found:
                return found
        return None
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return "one", annotation
    if typing.get_origin(annotation) in (dict, cabc.Mapping) and len(typing.get_args(annotation)) == 2:
        inner = typing.get_args(annotation)[1]
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            return "each", inner
    return None


@cache
def _rule_keys(target: str) -> tuple[str, ...]:
    """The names under which tasks/config/rules.py may hold a rule for `target`: its own, and
    each rule's class that it derives from (torch.optim.SGD -> torch.optim.Optimizer)."""
    from hydra.utils import get_object

    from tasks.config.rules import CHOICES, PATTERNS, RANGES

    obj = get_object(target)
    keys = [target]
    for name in dict.fromkeys(k for table in (RANGES, CHOICES, PATTERNS) for k, _ in table):
        module, _, attr = name.rpartition(".")
        if name == target or module.split(".")[0] not in sys.modules:
            continue  # a class whose package is not imported cannot be a base of `target`
        base = getattr(sys.modules.get(module) or get_object(module), attr, None)
        if isinstance(obj, type) and isinstance(base, type) and issubclass(obj, base):
            keys.append(name)
    return tuple(keys)


def _rule(table: dict, target: str, name: str) -> Any:
    return next((table[k, name] for k in _rule_keys(target) if (k, name) in table), None)


def range_for(target: str, name: str, annotation: Any = None) -> Range | None:
    from tasks.config.rules import RANGES

    declared = _metadata(annotation, Range)
    return declared if declared is not None else _rule(RANGES, target, name)


def choices_for(target: str, name: str, annotation: Any = None) -> tuple | None:
    from tasks.config.rules import CHOICES

    found = _metadata(annotation, Choices) or _rule(CHOICES, target, name)
    return found.values() if isinstance(found, Choices) else found


def keywords_of(target: str, name: str) -> str | None:
    """The callable that parameter `name` of `target` hands its dict to as keyword arguments."""
    sig = signature_of(target)
    param = sig.params.get(name) if sig else None
    found = _metadata(param.annotation, KeywordsOf) if param else None
    return found.target if found else None


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return []


def check_value(path: str, value: Any, param: Param, target: str) -> None:
    """One value: type, then range, then choices; raise a UserError naming all three."""
    where = f"{param.owner.rsplit('.', 1)[-1]}({param.name})" if param.owner else param.name
    if value is None and param.required:
        return  # a placeholder for a value that must be given: the target's own check says which and how
    if not conforms(value, param.annotation):
        expected = describe(param.annotation)
        problem = "is not a valid choice" if expected.startswith("one of") else "has the wrong type"
        raise UserError(f"Config value {path}={_shown(value)} {problem}: {where} expects {expected}.")
    rule = range_for(target, param.name, param.annotation)
    if rule is not None:
        for number in _numbers(value):
            if not rule.holds(number):
                raise UserError(
                    f"Config value {path}={_shown(value)} is out of range: {where} expects a value "
                    f"{rule.describe()}. Set {path} to a value {rule.describe().split(' (')[0]}."
                )
    from tasks.config.rules import PATTERNS

    pattern = _metadata(param.annotation, Pattern) or _rule(PATTERNS, target, param.name)
    if pattern is not None and isinstance(value, str) and not re.fullmatch(pattern.regex, value):
        raise UserError(f"Config value {path}={_shown(value)} is not valid: {where} expects {pattern.what}.")
    allowed = choices_for(target, param.name, param.annotation)
    if allowed is not None and value not in allowed and not (value is None and _allows_none(param.annotation)):
        shown = [("null" if a is None else a) for a in allowed]
        raise UserError(f"Config value {path}={_shown(value)} is not a valid choice: {where} expects one of {shown}.")


def _allows_none(annotation: Any) -> bool:
    return conforms(None, annotation) and annotation is not UNCHECKED


def _require(path: str, node: dict, target: str) -> None:
    missing = [n for n, p in signature_of(target).params.items() if p.required and n not in node]
    if missing:
        raise UserError(f"'{path}' needs {missing}. Set them, e.g. {path}.{missing[0]}=<value>.")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def check_mapping(
    path: str,
    node: dict,
    target: str,
    suggest: Callable[[str, list[str]], str],
    ignore: frozenset[str] = frozenset(),
    known_only: bool = False,
) -> None:
    """Every key of `node` against the signature of `target`; nested dicts that are handed
    on (KeywordsOf) against their callable, nested dataclass fields against their class.
    `known_only`: keys the signature does not declare pass (a config root's sections)."""
    sig = signature_of(target)
    if sig is None:
        return
    for key, value in node.items():
        if key in HYDRA_KEYS or key in ignore:
            continue
        param = sig.params.get(str(key))
        if param is None:
            if not sig.open_kwargs and not known_only:
                valid = sorted(sig.params)
                raise UserError(
                    f"Unknown config key '{_join(path, key)}': {target} does not take '{key}'."
                    f"{suggest(str(key), valid)} Valid keys of '{path}': {valid}."
                )
            continue
        check_value(_join(path, key), value, param, target)
        nested = _schema_of(param.annotation)
        if nested and isinstance(value, dict):
            how, schema = nested
            here = _join(path, key)
            items = [(here, value)] if how == "one" else [(f"{here}.{k}", v) for k, v in value.items()]
            for item_path, item in items:
                if isinstance(item, dict):
                    check_mapping(item_path, item, qualified(schema), suggest)
                    _require(item_path, item, qualified(schema))
        forward = _metadata(param.annotation, KeywordsOf)
        forward = forward.target if forward else None
        if forward and isinstance(value, dict) and not _is_target_node(value):
            check_mapping(_join(path, key), value, forward, suggest)
            _require(_join(path, key), value, forward)
