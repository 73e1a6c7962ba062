"""The one grammar for naming a teacher (or any pre-trained network a method reads), and its
loaders. A source is one string:

    run:<run dir>          a run of this project: its export folder (<run dir>/export)
    latest:<task>          the newest finished run of <task> under the runs folder (logs/<task>/runs/)
    <export folder|card>   an export of this project (either card layout, tasks.io.cards)
    file:<weights>         a weight file or checkpoint (.safetensors/.ckpt/.pt/.pth/.bin), with an architecture
    <weights>              the same, written as a plain path
    <diffusers folder>     a folder with a diffusers config.json (or a pipeline with unet/)
    <owner>/<name>         a Hugging Face hub id of a diffusers model (needs the network or the hub cache)
    hub:<timm tag>         timm's hub weights for a timm architecture (needs the network)
    <timm name>            a timm architecture; `pretrained` says whether it gets timm's hub weights
    random                 a random init of an architecture (tests, benchmarks)

`load_timm_teacher` builds a timm network from any of the timm forms; `strict_head=True` (the
default, for a teacher) refuses weights whose classifier is missing or of another shape instead
of leaving a random head. `load_unet` builds a diffusers UNet2DModel. Both load tensors only
(safetensors, or checkpoints with weights_only), never pickled code. Frozen use of what they
return is tasks.distill.frozen's contract."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from tasks.errors import UserError
from tasks.io import files

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
FORMS = (
    "run:<run dir>, latest:<task>, an export folder or card, file:<weights> (with an architecture), "
    "a diffusers folder or hub id, hub:<timm tag>, a timm name, or random"
)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
EXPORT, WEIGHTS, DIFFUSERS, DIFFUSERS_HUB, TIMM_HUB, TIMM_NAME, RANDOM = (
    "export",
    "weights",
    "diffusers",
    "diffusers-hub",
    "timm-hub",
    "timm-name",
    "random",
)


@dataclass(frozen=True)
class Source:
    """A parsed source: its form (one of the constants above), where it is, and the text as written."""

    form: str
    where: str
    text: str

    @property
    def path(self) -> Path:
        return Path(self.where).expanduser()


def latest_run(task: str, runs_dir: str | Path, holding: str, make: str = "") -> Path:
    """`<run>/<holding>` of the newest finished run of `task` under `<runs_dir>/<task>/runs/`."""
    from tasks.run.summary import finished

    root = Path(runs_dir).expanduser() / task / "runs"
    found = [run / holding for run in root.glob("*") if (run / holding).exists() and finished(run)]
    if not found:
        raise UserError(
            f"No finished '{task}' run with {holding} under {root}. "
            + (
                f"Make it first: {make}."
                if make
                else f"Run a '{task}' experiment first, or name the source another way."
            )
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def _is_diffusers(folder: Path) -> bool:
    for config in (folder / "config.json", folder / "unet" / "config.json", folder / "model_index.json"):
        if config.is_file() and '"_class_name"' in config.read_text(encoding="utf-8", errors="replace"):
            return True
    return False


def parse_source(text: str, runs_dir: str | Path | None = None, holding: str = "export", make: str = "") -> Source:
    """The form of a source string (`holding`: what `latest:` looks for inside a run, e.g. export/unet)."""
    text = str(text).strip()
    if not text:
        raise UserError(f"The source is empty. Name it as one of: {FORMS}.")
    form, sep, rest = text.partition(":")
    if sep and form == "latest":
        where = latest_run(rest, runs_dir or "logs", holding, make)
        return Source(DIFFUSERS if _is_diffusers(where) else EXPORT, str(where), text)
    if sep and form == "run":
        run = Path(rest).expanduser()
        where = run / holding if (run / holding).exists() else run
        if not where.exists():
            raise UserError(f"Source '{text}': {run} does not exist. Point it at a finished run's folder.")
        return Source(DIFFUSERS if _is_diffusers(where) else EXPORT, str(where), text)
    if sep and form == "file":
        return Source(WEIGHTS, rest, text)
    if sep and form == "hub":
        return Source(TIMM_HUB, rest, text)
    if text == "random":
        return Source(RANDOM, "", text)
    path = Path(text).expanduser()
    if path.suffix in WEIGHT_SUFFIXES:  # a folder named so is a mistake, not an export
        return Source(WEIGHTS, text, text)
    if path.exists():
        return Source(DIFFUSERS if path.is_dir() and _is_diffusers(path) else EXPORT, text, text)
    if text.startswith(("/", ".", "~")) or path.suffix == ".json":
        raise UserError(
            f"Source {text} does not exist. "
            + (f"Make it with {make}, or name" if make else "Check the path, or name")
            + f" the source as one of: {FORMS}."
        )
    if _HUB_ID.fullmatch(text):
        return Source(DIFFUSERS_HUB, text, text)
    return Source(TIMM_NAME, text, text)


def load_timm_teacher(
    source: str | Source,
    arch: str | None = None,
    prefix: str | None = None,
    num_classes: int | None = None,
    small_input_stem: bool = False,
    pretrained: bool = True,
    strict_head: bool = True,
    runs_dir: str | Path | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """A timm network (eval mode) from a source of a timm form. An export brings its own
    architecture and preprocessing (`model.pretrained_cfg` mean/std); a weight file needs `arch`
    (and `prefix`, the key prefix inside a checkpoint, e.g. net. for a ClassificationModule).
    `num_classes`: the outputs the caller needs (an export's head must have as many)."""
    from tasks.models.backbones import create_backbone

    src = source if isinstance(source, Source) else parse_source(source, runs_dir)
    if src.form == EXPORT:
        from tasks.io.cards import TIMM, load_card

        model = load_card(src.path, kinds_allowed=(TIMM,))
        have = getattr(model, "num_classes", None)
        if strict_head and num_classes is not None and have != num_classes:
            raise UserError(
                f"The teacher {src.text} predicts {have} classes, but {num_classes} are needed. "
                "Use a teacher trained on this data (or one with as many classes)."
            )
        return model.eval()
    if src.form in (WEIGHTS, RANDOM) and not arch:
        raise UserError(f"Source '{src.text}' needs its architecture: set arch=<timm name> beside it.")
    if src.form == WEIGHTS:
        path = files.require_file(src.path, "Teacher weights", f"Name the source as one of: {FORMS}.")
        model = create_backbone(arch, num_classes=num_classes or 0, small_input_stem=small_input_stem, **timm_kwargs)
        from tasks.models.backbones.weights import load_backbone_weights

        load_backbone_weights(model, path, prefix=prefix, strict_head=strict_head)
        return model.eval()
    if src.form == RANDOM:
        return create_backbone(arch, num_classes=num_classes or 0, small_input_stem=small_input_stem, **timm_kwargs)
    if src.form in (TIMM_HUB, TIMM_NAME):
        tag = src.where or arch
        hub = src.form == TIMM_HUB or pretrained
        try:
            model = create_backbone(
                tag, num_classes=num_classes or 0, small_input_stem=small_input_stem, pretrained=hub, **timm_kwargs
            )
        except (OSError, RuntimeError, ValueError) as err:
            raise UserError(
                f"Cannot build the timm model '{tag}' ({type(err).__name__}: {err}). Hub weights need the network; "
                "offline, download them once and name the file (file:<path>) with its architecture."
            ) from None
        return model.eval()
    raise UserError(f"Source '{src.text}' is a diffusers model, not a timm network. Name one of: {FORMS}.")


def input_normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) a timm network expects its inputs normalised with, from its pretrained_cfg
    (an export records its training data's), or None when it does not say."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("mean") is None or cfg.get("std") is None:
        return None
    return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])


# --- diffusers ------------------------------------------------------------------------------
def unet_folder(path: Path) -> Path:
    """The folder holding the U-Net's config.json and safetensors weights (a pipeline
    folder's `unet/`, or the folder itself). A pickle-only folder is refused."""
    if (path / "unet" / "config.json").is_file():
        path = path / "unet"
    if not (path / "config.json").is_file():
        raise UserError(
            f"Teacher folder {path} has no config.json: it is not a diffusers UNet2DModel folder "
            f"(save one with unet.save_pretrained(folder, safe_serialization=True))."
        )
    files.read_json(path / "config.json", "Teacher U-Net config", keys=("_class_name",))
    for weights in path.glob("*.safetensors"):
        files.check_weights(weights, "Teacher U-Net weights")
    if not list(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.ckpt"))
        what = f"only pickle weights ({', '.join(pickles)})" if pickles else "no weight file"
        raise UserError(
            f"Teacher folder {path} holds {what}. Teachers load from safetensors only, since a pickle can run code "
            "when loaded. Convert it once where you trust the file: UNet2DModel.from_pretrained(folder)"
            ".save_pretrained(folder, safe_serialization=True)."
        )
    return path


def _unet_from_pretrained(source: str, **kwargs):
    from diffusers import UNet2DModel

    # safetensors only: a pickled .bin could run code when loaded.
    return UNet2DModel.from_pretrained(source, use_safetensors=True, low_cpu_mem_usage=False, **kwargs)


def load_unet(
    source: str,
    runs_dir: str | Path | None = None,
    subfolder: str | None = None,
    offline: bool = False,
    make: str = "",
    holding: str = "export/unet",
):
    """A diffusers UNet2DModel from a local folder, `latest:<task>` / `run:<dir>` (its
    `holding` folder), or a Hugging Face hub id (needs the network or the hub cache).
    `make`: the command that makes such a teacher, named in the messages."""
    src = parse_source(source, runs_dir, holding=holding, make=make)
    if src.form in (DIFFUSERS, EXPORT) and src.path.exists():
        return _unet_from_pretrained(str(unet_folder(src.path / subfolder if subfolder else src.path)))
    if src.form != DIFFUSERS_HUB:
        raise UserError(
            f"Teacher folder not found: {source}. Make it with {make or 'a DDPM run'}; or set "
            "model.teacher.source=<a UNet2DModel folder or a hub id such as google/ddpm-cifar10-32>."
        )
    try:
        return _unet_from_pretrained(source, subfolder=subfolder, local_files_only=offline)
    except Exception as err:  # network, missing repo, missing safetensors file: one message with the routes
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"Could not load the teacher '{source}' from a local folder (there is none) or the Hugging Face hub "
            f"({type(err).__name__}: {first}). Online, check the id and that it has safetensors weights; offline, "
            f"download it once while online, or use a local teacher: {make or 'a DDPM run of this project'}."
        ) from None
