"""kt-push: upload an export of this project to the Hugging Face Hub.

    kt-push logs/classify_digits/runs/<run>/export <user>/<repo>           # then, anywhere:
    python -c "import timm; timm.create_model('hf-hub:<user>/<repo>', pretrained=True)"
    kt-push <export dir> <user>/<repo> --private --dry-run --out /tmp/staged

A timm classifier or backbone goes up in timm's Hub layout (config.json + model.safetensors,
an old-layout export is converted first), with a README model card (its preprocessing, test
metrics and the run's overrides); any other kind goes up as its folder with a README. The
token is huggingface_hub's (`huggingface-cli login` or HF_TOKEN). Only the upload needs the
network; --dry-run stages the folder and uploads nothing.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tasks.errors import UserError
from tasks.io import cards, files
from tasks.io.places import require_writable
from tasks.run.boundary import guarded

HUB_FILES = (cards.TIMM_CONFIG, cards.WEIGHTS)  # what timm's hf-hub: loader reads


def stage(export: str | Path, folder: Path, repo_id: str) -> cards.Card:
    """Write what goes up into `folder`; returns the export's card."""
    card = cards.read_card(export)
    if card.kind == cards.TIMM:
        card.weights()  # a broken or pickled weight file stops here, before anything is staged
        if card.legacy:  # re-export in the Hub layout, with the old card's fields kept
            from tasks.models.backbones.export import export_timm

            model = cards.load_card(card)
            kept = {k: v for k, v in card.fields.items() if k in ("run", "data")}
            export_timm(model, folder, card=kept, data=card.fields.get("data") or run_data(card))
        else:
            for name in HUB_FILES:
                shutil.copy2(card.folder / name, folder / name)
        card = cards.read_card(folder)
    else:
        shutil.copytree(card.folder, folder, dirs_exist_ok=True)
    readme = folder / "README.md"
    if not readme.exists():
        readme.write_text(model_card(card, repo_id), encoding="utf-8")
    return card


def run_data(card: cards.Card) -> dict[str, Any]:
    """The data fields of an old export that has none: its run's DataModule, from the run dir's
    .hydra/config.yaml (normalisation, input size, classes; no data is read)."""
    config = Path(str(card.run.get("run_dir", ""))) / ".hydra" / "config.yaml"
    if not card.run.get("run_dir") or not config.is_file():
        raise UserError(
            f"{card.path} is an old-layout export without the normalisation it was trained with, and "
            f"its run's config ({config}) is not there to tell it. Push it where its run dir is, or add "
            '"data": {"mean": [...], "std": [...], "input_size": [3, H, W]} to the card.'
        )
    from omegaconf import OmegaConf

    from tasks.run.instantiate import build

    cfg = OmegaConf.load(config)
    return cards.data_config(build("data", cfg.data))


def model_card(card: cards.Card, repo_id: str) -> str:
    """A README with the Hub's front matter, how to load the model, its preprocessing and results."""
    run = card.run
    timm_kind = card.kind == cards.TIMM
    tags = ["image-classification", "timm", "kt-framework"] if timm_kind else ["kt-framework", card.kind]
    lines = [
        "---",
        "tags:",
        *[f"- {t}" for t in tags],
        *(["library_name: timm"] if timm_kind else []),
        "---",
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
    ]
    if run.get("experiment") or run.get("task_name"):
        lines += [
            f"Trained with the kt-framework recipe `{run.get('experiment') or run.get('task_name')}`"
            f"{' (seed ' + str(run['seed']) + ')' if 'seed' in run else ''}.",
            "",
        ]
    lines += ["## Load", "", "```python"]
    if timm_kind:
        if str(card.fields.get("architecture", "")).endswith("_smallstem"):
            lines.append("import tasks.models.backbones  # kt-framework: registers the *_smallstem variants in timm")
        lines += ["import timm", f"model = timm.create_model('hf-hub:{repo_id}', pretrained=True)"]
    else:
        lines += [
            "from huggingface_hub import snapshot_download",
            "from tasks.io.cards import load_card",
            f"model = load_card(snapshot_download('{repo_id}'))  # kt-framework kind '{card.kind}'",
        ]
    lines += ["```", ""]
    data = card.fields.get("pretrained_cfg") or card.fields.get("data") or {}
    if data.get("mean"):
        lines += [
            "## Preprocessing",
            "",
            f"Input size {data.get('input_size')}, the whole image (no crop), scaled to "
            f"[0, 1] and normalised with mean {data['mean']} and std {data['std']}.",
            "",
        ]
    if run.get("test"):
        lines += [
            "## Test metrics",
            "",
            "| metric | value |",
            "|---|---|",
            *[f"| {k} | {float(v):.4f} |" for k, v in sorted(run["test"].items())],
            "",
        ]
    if run.get("overrides"):
        lines += ["## Command", "", "```", "python train.py " + " ".join(run["overrides"]), "```", ""]
    return "\n".join(lines)


def _hub_error(err: Exception, repo_id: str) -> UserError:
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    name = type(err).__name__
    if name in ("HFValidationError",):
        return UserError(f"'{repo_id}' is not a valid Hub repo id ({text}). Use <user or org>/<name>.")
    if name in ("LocalTokenNotFoundError",) or "401" in text or "403" in text:
        return UserError(
            f"The Hub refused the upload to {repo_id} ({name}: {text}). "
            "Log in with `huggingface-cli login` or set HF_TOKEN to a token with write access."
        )
    return UserError(
        f"Could not upload to the Hugging Face Hub ({name}: {text}). Check the network connection; "
        "kt-push <export> <repo> --dry-run --out <folder> stages the upload without it."
    )


def push(
    export: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    api: Any = None,
) -> str:
    """Stage the export and upload it with huggingface_hub's HfApi; returns the commit URL."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token, library_name="kt-framework")
    with tempfile.TemporaryDirectory() as tmp:
        card = stage(export, Path(tmp), repo_id)
        message = commit_message or f"Add {card.kind} export of {card.run.get('experiment') or 'a kt-framework run'}"
        try:
            repo = api.create_repo(repo_id, private=private, exist_ok=True)
            repo_id = getattr(repo, "repo_id", repo_id)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=message)
        except UserError:
            raise
        except Exception as err:  # huggingface_hub's HTTP, auth and validation errors; the network
            raise _hub_error(err, repo_id) from None
    return str(getattr(info, "commit_url", info))


@guarded("kt-push")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kt-push", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("export", help="an export folder (<run dir>/export) or the card inside it")
    parser.add_argument("repo_id", help="the Hub repo to create or update: <user or org>/<name>")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", default=None, help="branch to upload to (default: main)")
    parser.add_argument("--message", default=None, help="commit message")
    parser.add_argument("--token", default=None, help="a Hub token (default: huggingface_hub's login or HF_TOKEN)")
    parser.add_argument("--dry-run", action="store_true", help="stage the upload in --out and upload nothing")
    parser.add_argument("--out", default=None, help="with --dry-run: the folder to stage into")
    args = parser.parse_args(argv)
    if args.dry_run:
        if not args.out:
            raise SystemExit("error: --dry-run needs --out <folder> to stage the upload into.")
        out = require_writable(args.out, "The --out folder", "Pass --out <a new folder you can write>.")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise SystemExit(f"error: --out {out} is not empty. Name a new or empty folder.")
        with files.complete_folder(out) as temp:  # all or nothing: a full disk leaves no half upload
            stage(args.export, temp, args.repo_id)
        print(f"staged for {args.repo_id}: {sorted(p.name for p in out.iterdir())} in {out} (nothing uploaded)")
        return
    url = push(args.export, args.repo_id, args.private, args.revision, args.message, args.token)
    print(f"uploaded {args.export} to https://huggingface.co/{args.repo_id} ({url})")
