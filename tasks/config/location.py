"""Where a command finds its configs and the user's code: the packaged configs (the package
tasks.conf, which is conf/ of the checkout; Hydra reads it as pkg://tasks.conf in an editable
and a wheel install alike), the user's folders of KT_CONFIG_DIR (tasks/config/folders.py has
all the folders of one command), and the folder the command runs in, whose modules a
`_target_` may name."""

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


def working_dir_on_path() -> None:
    """Let a `_target_` name a module in the folder the command runs in, as `python -m` does
    (a console script's own folder is bin/, not the working folder)."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
