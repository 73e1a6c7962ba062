"""The places a command writes (run dir, log dir, logger dirs, cache dir, an --out folder) are
checked before anything else is written: each must exist as a writable folder or be creatable
under one. The probe is a real file made and removed in the nearest existing folder (so it also
sees read-only mounts, root-squashed NFS and ACLs, which permission bits do not show); a place
that fails is one UserError naming it, the reason and the key to change."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tasks.errors import UserError
from tasks.io.files import what_is

_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "it is on a read-only file system",
    errno.ENOSPC: "no space left on that device",
    errno.EDQUOT: "the disk quota there is exceeded",
}


def nearest_existing(path: Path) -> Path:
    while not path.exists() and not path.is_symlink() and path != path.parent:
        path = path.parent
    return path


def require_writable(path: str | Path, what: str, fix: str) -> Path:
    """`path` as a Path where a folder can be written (it exists as one, or can be created)."""
    path = Path(str(path)).expanduser()
    found = nearest_existing(path.absolute())
    if found.is_symlink() and not found.exists():
        raise UserError(f"{what} {path} cannot be created: {found} is a broken link. {fix}")
    if not found.is_dir():
        role = "is" if found == path.absolute() else f"cannot be created: {found} is"
        raise UserError(f"{what} {path} {role} {what_is(found)}, not a folder. {fix}")
    try:
        handle, probe = tempfile.mkstemp(dir=found, prefix=".kt-write-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        reason = _REASONS.get(err.errno, err.strerror or type(err).__name__)
        verb = "written" if found == path.absolute() else f"created in {found}"
        raise UserError(f"{what} {path} cannot be {verb}: {reason}. {fix}") from None
    return path


def _value(cfg: DictConfig, key: str) -> str | None:
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
    except Exception:  # an interpolation that cannot resolve here: the config checks name it
        return None
    return str(value) if value not in (None, "") and not OmegaConf.is_missing(cfg, key) else None


def written_places(cfg: DictConfig, multirun: bool) -> list[tuple[str, str, str]]:
    """(key, path, what) for every folder a composed Hydra config writes into."""
    places = []
    if (value := _value(cfg, "paths.log_dir")) is not None:
        places.append(("paths.log_dir", value, "The log dir"))
    run_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if (value := _value(cfg, run_key)) is not None:
        places.append((run_key, value, "The run dir" if not multirun else "The sweep dir"))
    if (value := _value(cfg, "cache_dir")) is not None:
        places.append(("cache_dir", value, "The cache dir"))
    loggers = cfg.get("logger") if isinstance(cfg.get("logger"), DictConfig) else {}
    for name, node in (loggers or {}).items():
        if isinstance(node, DictConfig) and "save_dir" in node:
            if (value := _value(cfg, f"logger.{name}.save_dir")) is not None:
                places.append((f"logger.{name}.save_dir", value, f"The {name} logger's dir"))
    return places


def check_places(cfg: DictConfig, multirun: bool) -> None:
    """Every place `cfg` writes into is a writable folder or can be created: else one UserError."""
    for key, value, what in written_places(cfg, multirun):
        require_writable(value, what, f"Set {key}=<a folder you can write>.")
