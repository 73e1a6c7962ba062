"""Logger factories: W&B that runs offline unless the user is logged in and keeps one run
id per run dir (so `resume=` continues the same W&B run)."""

from __future__ import annotations

import netrc
import os
import secrets
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

ID_FILE = "wandb_id.txt"


def wandb_logged_in() -> bool:
    """True when `wandb login` stored a key (in ~/.netrc) or WANDB_API_KEY is set."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def run_id(save_dir: str | Path) -> str:
    """The W&B run id of this run dir: read back on resume, created once otherwise."""
    path = Path(save_dir) / ID_FILE
    if path.is_file():
        return path.read_text().strip()
    new_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    if rank_zero_only.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new_id)
    return new_id


def wandb_logger(save_dir: str, project: str, offline: bool | None = None, **kwargs: Any) -> WandbLogger:
    """WandbLogger in `save_dir`; `offline=None` means offline unless logged in or WANDB_MODE=online.
    `wandb sync <run dir>/wandb/offline-run-*` uploads an offline run later."""
    if offline is None:
        mode = os.environ.get("WANDB_MODE", "")
        offline = mode in ("offline", "dryrun") or (mode != "online" and not wandb_logged_in())
    return WandbLogger(save_dir=save_dir, project=project, offline=offline, id=run_id(save_dir),
                       resume="allow", log_model=False, **kwargs)
