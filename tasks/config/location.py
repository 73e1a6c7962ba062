"""Where a command finds its configs and the user's code: the packaged configs (the package
tasks.conf, which is conf/ of the checkout; Hydra reads it as pkg://tasks.conf in an editable
and a wheel install alike), the user's config folders beside them (KT_CONFIG_DIR, --config-dir,
hydra.searchpath), and the folder the command runs in, whose modules a `_target_` may name."""

from __future__ import annotations

import os
import sys
from importlib.resources import files
from pathlib import Path

CONFIG_PACKAGE = "tasks.conf"
CONFIG_SOURCE = f"pkg://{CONFIG_PACKAGE}"  # the primary config source of every command
CONF_DIR = Path(str(files(CONFIG_PACKAGE))).resolve()  # the same folder on disk (installs unpack the package)
USER_CONFIG_ENV = "KT_CONFIG_DIR"  # folders (os.pathsep between them) searched after the packaged configs
HOW_TO_ADD = (
    f"--config-dir <folder>, hydra.searchpath=[file://<folder>] or {USER_CONFIG_ENV}=<folder> "
    "adds a config folder of your own"
)


def env_config_dirs() -> list[Path]:
    """The folders of KT_CONFIG_DIR, absolute (relative ones from the working folder)."""
    value = os.environ.get(USER_CONFIG_ENV, "")
    return [Path(part).expanduser().resolve() for part in value.split(os.pathsep) if part.strip()]


def add_env_config_dir(folder: str | Path) -> None:
    """Put a folder first in KT_CONFIG_DIR, for this process and the ones it starts."""
    current = os.environ.get(USER_CONFIG_ENV, "")
    os.environ[USER_CONFIG_ENV] = os.pathsep.join(p for p in (str(Path(folder).resolve()), current) if p)


def searchpath_dir(entry: str) -> Path | None:
    """The folder of one hydra.searchpath entry (file://<dir>, pkg://<package>, or a plain path)."""
    if entry.startswith("pkg://"):
        try:
            return Path(str(files(entry[len("pkg://") :].replace("/", "."))))
        except (ModuleNotFoundError, TypeError, ValueError):
            return None
    return Path(entry.removeprefix("file://")).expanduser().resolve()


def config_folders(config_dir: str | None = None, searchpath: list[str] | None = None) -> list[tuple[str, Path]]:
    """Every folder a command composes from, labelled by who named it, the packaged one first."""
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


def working_dir_on_path() -> None:
    """Let a `_target_` name a module in the folder the command runs in, as `python -m` does
    (a console script's own folder is bin/, not the working folder)."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
