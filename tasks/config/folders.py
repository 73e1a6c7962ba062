"""The config folders one command composes from, the packaged one first, then the user's
(KT_CONFIG_DIR, --config-dir, hydra.searchpath): each must exist and shadow no packaged config,
and an unknown name lists what each folder offers in its group."""

from __future__ import annotations

import difflib
from importlib.resources import files
from pathlib import Path

from tasks.config.location import CONF_DIR, HOW_TO_ADD, USER_CONFIG_ENV, env_config_dirs
from tasks.errors import UserError

Folders = list[tuple[str, Path]]  # (who named it, the folder)


def searchpath_dir(entry: str) -> Path | None:
    """The folder of one hydra.searchpath entry (file://<dir>, pkg://<package>, or a plain path)."""
    if entry.startswith("pkg://"):
        try:
            return Path(str(files(entry[len("pkg://") :].replace("/", "."))))
        except (ModuleNotFoundError, TypeError, ValueError):
            return None
    return Path(entry.removeprefix("file://")).expanduser().resolve()


def config_folders(config_dir: str | None = None, searchpath: list[str] | None = None) -> Folders:
    """Every folder a command composes from, in Hydra's order of search, labelled by who named it."""
    folders = [("packaged", CONF_DIR)]
    folders += [(USER_CONFIG_ENV, p) for p in env_config_dirs()]
    if config_dir:
        folders.append(("--config-dir", Path(config_dir).expanduser().resolve()))
    for entry in searchpath or []:
        if (folder := searchpath_dir(str(entry))) is not None:
            folders.append(("hydra.searchpath", folder))
    return folders


def options_in(folder: Path, group: str) -> list[str]:
    """The option names of a config group in one folder (its YAML files, without the suffix)."""
    return sorted(p.stem for p in (folder / group).glob("*.yaml")) if (folder / group).is_dir() else []


def check_folders(folders: Folders) -> None:
    """Every folder of the user's exists (Hydra would only warn, then miss its configs), and none
    of its configs has the name of a packaged one: Hydra reads the packaged folder first, so the
    user's file would be ignored without a word."""
    packaged = [p.relative_to(CONF_DIR) for p in CONF_DIR.glob("**/*.yaml")]
    for label, folder in folders[1:]:
        if not folder.is_dir():
            raise UserError(f"{label} names {folder}, which is not a folder. Point it at your config folder.")
        if folder.resolve() == CONF_DIR:
            continue
        if clash := sorted(str(rel) for rel in packaged if (folder / rel).is_file()):
            raise UserError(
                f"{label} names {folder}, whose {clash[:5]} {'has' if len(clash) == 1 else 'have'} the name of a "
                "packaged config, which is read first: yours would be ignored. Give yours a new name, "
                f"e.g. {Path(clash[0]).with_name('my_' + Path(clash[0]).name)}."
            )


def offered(folders: Folders, group: str) -> tuple[list[str], list[str]]:
    """One line per folder with its options in `group` (and how to add a folder when the user named
    none), and all the options."""
    lines, names = [], []
    for label, folder in folders:
        options = options_in(folder, group)
        names += options
        lines.append(f"  {label} ({folder / group}): {', '.join(options) or '(none)'}")
    if len(folders) == 1:
        lines.append(f"  yours: no config folder given ({HOW_TO_ADD})")
    return lines, names


def unknown_option(missing: str, folders: Folders) -> str:
    """The message for an unknown config (experiment=<name>, model=<name>, ...; `missing` is
    '<group>/<name>'): what each config folder offers there."""
    group, _, name = missing.rpartition("/")
    lines, names = offered(folders, group)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f" Did you mean {group}={close[0]}?" if close else ""
    return f"Could not find '{missing}': no {group} config '{name}' in any config folder.{hint}\n" + "\n".join(lines)
