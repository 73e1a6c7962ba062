"""Export cards: one schema (`Card`, with a `kind`) and one registry (`load_card`) that turns
any export of this project back into its network.

An export folder holds one card. Classifiers and backbones use timm's Hub layout:
`config.json` (timm's architecture, model_args and pretrained_cfg, plus the card fields below)
beside `model.safetensors`, so `timm.create_model("local-dir:<folder>", pretrained=True)`
loads them without this project (a `*_smallstem` architecture needs `import tasks.models.backbones`
first: it registers those variants in timm). Other kinds write `card.json` beside their files.
Exports made before this layout (`<name>.json` + `<name>.safetensors`) still load.

Card fields: `kind` (what the loader of that kind rebuilds), `format` (2 for this layout),
`weights` (the file of tensors), `run` (the run that made it: task, experiment, test metrics,
overrides), `data` (normalisation, input size, class names) and `load` (a line that loads it).
The kind "timm" is built in; method packages register theirs as entry points of the group
"kt.cards" in their pyproject.toml (`<kind> = "<module>:<function of a Card>"`), so this file
names no method."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tasks.config.registry import CARDS, entry_points
from tasks.errors import UserError
from tasks.io import files

GROUP = CARDS
FORMAT = 2
TIMM = "timm"
TIMM_CONFIG, CARD_FILE, WEIGHTS = "config.json", "card.json", "model.safetensors"
CARD_FILES = (TIMM_CONFIG, CARD_FILE)
LEGACY_NAMES = ("model.json", "backbone.json")  # the cards of the old layout, in the order they are looked for
FIX = "Point it at an export folder of this project (<run dir>/export) or at the card inside it."


@dataclass(frozen=True)
class CardFields:
    """The typed fields every card may hold (tasks.config.schema checks them; other keys are the kind's)."""

    kind: str
    format: int = FORMAT
    weights: str = WEIGHTS
    run: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    load: str = ""


@dataclass(frozen=True)
class Card:
    """A card read from disk: its kind, its file, everything in it, and whether it is of the old layout."""

    kind: str
    path: Path
    fields: dict[str, Any]
    legacy: bool = False

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def run(self) -> dict[str, Any]:
        return dict(self.fields.get("run") or {})

    def require(self, *keys: str) -> Card:
        """This card, if it holds every one of `keys` (a kind's own fields); else one message."""
        files.require_keys(self.fields, self.path, f"Export card ({self.kind})", keys, FIX)
        return self

    def file(self, name: str, what: str) -> Path:
        """A file the card names, inside its folder, checked to be a readable file."""
        inside = (self.folder / name).resolve()
        if self.folder.resolve() not in inside.parents:
            raise UserError(f"Export card {self.path} names the file '{name}' outside its folder. {FIX}")
        return files.require_file(inside, f"{what} of export card {self.path}", "Re-export the run.")

    def weights(self) -> Path:
        """The card's file of tensors, checked (content matches the name; no pickled code)."""
        name = str(self.fields.get("weights") or WEIGHTS)
        return files.check_weights(
            self.file(name, "Weights"), f"Weights of export card {self.path}", "Re-export the run."
        )


# --- reading -------------------------------------------------------------------------------
def _kind_of(data: dict) -> tuple[str | None, bool]:
    """(kind, legacy) of a JSON object, or (None, False) when it is no card (a diffusers config, ...)."""
    if isinstance(data.get("kind"), str):
        return data["kind"], "format" not in data
    if "architecture" in data and "pretrained_cfg" in data:
        return TIMM, False  # a timm Hub config.json (e.g. one pushed by timm itself)
    if "timm_name" in data:
        return TIMM, True  # export_backbone's card before the Hub layout
    return None, False


def card_file(path: str | Path) -> Path:
    """The card file of an export folder (or the card itself): config.json or card.json, else
    an old-layout card (model.json, backbone.json, or the one JSON card there)."""
    path = Path(str(path)).expanduser()
    if not path.is_dir() or path.suffix == ".json":  # a folder named like a card is a mistake, not an export
        return files.require_file(path, "Export card", FIX)
    for name in (*CARD_FILES, *LEGACY_NAMES):
        if (path / name).is_file() and _kind_of(_read(path / name))[0]:
            return path / name
    found = [p for p in sorted(path.glob("*.json")) if _kind_of(_read(p))[0]]
    if len(found) == 1:
        return found[0]
    held = sorted(p.name for p in path.iterdir())[:12]
    what = f"several cards {[p.name for p in found]}: name one" if found else f"no export card (it holds {held})"
    raise UserError(f"Export folder {path} has {what}. {FIX}")


def _read(path: Path) -> dict:
    return files.read_json(path, "Export card", FIX)


def read_card(path: str | Path) -> Card:
    """The Card of an export folder or card file; one message when it is none."""
    path = card_file(path)
    data = _read(path)
    kind, legacy = _kind_of(data)
    if kind is None:
        raise UserError(
            f"{path} is not an export card of this project: it has no 'kind' (its keys: {sorted(data)[:12]}). {FIX}"
        )
    from tasks.config.check import check_node

    typed = {k: data[k] for k in ("format", "weights", "run", "data", "load") if k in data}
    check_node(f"card {path}", {"kind": kind, **typed}, "tasks.io.cards.CardFields", known_only=True)
    legacy = legacy or path.name not in CARD_FILES
    if legacy and "run" not in data:
        data = {**data, "run": _old_run_card(path.parent)}
    return Card(kind=kind, path=path, fields=data, legacy=legacy)


def _old_run_card(folder: Path) -> dict[str, Any]:
    """The run's fields of an old-layout export: train.py wrote them to a second card.json beside it."""
    path = folder / CARD_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or "kind" in data:
        return {}
    return {k: data[k] for k in ("task_name", "experiment", "run_dir", "seed", "test", "overrides") if k in data}


# --- the registry --------------------------------------------------------------------------
Loader = Callable[..., Any]
_BUILT_IN: dict[str, str] = {TIMM: "tasks.models.backbones.export:load_timm_card"}
_REGISTERED: dict[str, Loader] = {}


def register(kind: str, loader: Loader) -> None:
    """Register a loader in this process (tests, notebooks); packages use the entry-point group."""
    _REGISTERED[kind] = loader


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return entry_points(GROUP)


def kinds() -> list[str]:
    return sorted({*_BUILT_IN, *_entry_points(), *_REGISTERED})


def loader_of(kind: str) -> Loader:
    if kind in _REGISTERED:
        return _REGISTERED[kind]
    if kind in _BUILT_IN:
        module, _, name = _BUILT_IN[kind].partition(":")
        return getattr(__import__(module, fromlist=[name]), name)
    if kind in _entry_points():
        return _entry_points()[kind].load()
    raise UserError(
        f"No loader for export cards of kind '{kind}' (known kinds: {kinds()}). The package that "
        f'writes that kind registers it under [project.entry-points."{GROUP}"] in its pyproject.toml; '
        "reinstall the project (pip install -e .) if it was added since."
    )


def load_card(path: str | Path | Card, kinds_allowed: tuple[str, ...] | None = None, **kwargs: Any) -> Any:
    """The network of an export (folder or card file, either layout), rebuilt by its kind's loader."""
    card = path if isinstance(path, Card) else read_card(path)
    if kinds_allowed and card.kind not in kinds_allowed:
        raise UserError(f"{card.path} is an export of kind '{card.kind}'; expected {' or '.join(kinds_allowed)}.")
    return loader_of(card.kind)(card, **kwargs)


# --- writing -------------------------------------------------------------------------------
def write_card(folder: str | Path, kind: str, fields: dict[str, Any], name: str = CARD_FILE) -> Path:
    """A card of `kind` in `folder` (card.json unless the kind's layout names another file)."""
    path = Path(folder) / name
    return files.write_text(path, json.dumps({"kind": kind, "format": FORMAT, **fields}, indent=2, default=str))


def cards_in(folder: str | Path) -> list[Path]:
    """Every card file under an export folder (both layouts; other JSON files are left out)."""
    found = []
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and _kind_of(data)[0]:
            found.append(path)
    return found


def data_config(datamodule: Any) -> dict[str, Any]:
    """What a card records of the data a network was trained on: normalisation, input size,
    number and names of the classes (only what the DataModule publishes)."""
    if datamodule is None:
        return {}
    out: dict[str, Any] = {}
    if getattr(datamodule, "mean", None) is not None and getattr(datamodule, "std", None) is not None:
        out["mean"], out["std"] = [float(v) for v in datamodule.mean], [float(v) for v in datamodule.std]
    size = getattr(datamodule, "image_size", None)
    if size:
        size = (size, size) if isinstance(size, int) else tuple(size)
        out["input_size"] = [len(out.get("mean", (0, 0, 0))), *map(int, size)]
    n = getattr(datamodule, "num_classes", None)
    if n:
        out["num_classes"] = int(n)
    names = getattr(datamodule, "class_names", None) or getattr(datamodule, "classes", None)
    if names and all(isinstance(c, str) for c in names) and (not n or len(names) == n):
        out["label_names"] = list(names)
    return out


def apply_data(config: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """timm's config.json with the data's preprocessing in its pretrained_cfg (what timm's
    resolve_data_config and save_config_for_hf read): mean, std, input size, the whole image
    (crop_pct 1.0, as this project evaluates), and the class names when they fit the head."""
    cfg = dict(config.get("pretrained_cfg") or {})
    if "mean" in data:
        cfg["mean"], cfg["std"] = list(data["mean"]), list(data["std"])
    if "input_size" in data:
        if list(cfg.get("input_size") or [])[1:] != list(data["input_size"])[1:]:
            cfg["pool_size"] = None  # timm's rule: a pool size belongs to the size it was given for
        cfg["input_size"] = list(data["input_size"])
        for key in ("test_input_size", "test_crop_pct", "test_pool_size", "min_input_size"):
            cfg.pop(key, None)
    cfg["crop_pct"], cfg["crop_mode"] = 1.0, "center"
    out = {**config, "pretrained_cfg": cfg}
    names = data.get("label_names")
    if names and len(names) == config.get("num_classes"):
        out["label_names"] = list(names)
    return out


def stamp(folder: str | Path, run: dict[str, Any], data: dict[str, Any]) -> list[Path]:
    """Write the run's fields (and the data's, timm-native in a config.json) into every card
    of an export folder: the export's one card carries them, no second card beside it."""
    stamped = []
    for path in cards_in(folder):
        card = json.loads(path.read_text(encoding="utf-8"))
        card = {**card, "run": {**(card.get("run") or {}), **run}}
        if data:
            card["data"] = {**(card.get("data") or {}), **data}
            if _kind_of(card)[0] == TIMM and "pretrained_cfg" in card:
                card = apply_data(card, data)
        path.write_text(json.dumps(card, indent=2, default=str))
        stamped.append(path)
    return stamped
