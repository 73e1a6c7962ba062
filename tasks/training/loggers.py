"""Logger factories: W&B that runs offline unless the user is logged in and keeps one run
id per run dir (so `resume=` continues the same W&B run), and a CSV logger whose
metrics.csv keeps the epochs before a resume."""

from __future__ import annotations

import csv
import netrc
import os
import secrets
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
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
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        offline=offline,
        id=run_id(save_dir),
        resume="allow",
        log_model=False,
        **kwargs,
    )


class _ResumedCSVWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv, so a resumed run would lose the
    epochs before its checkpoint. This one keeps the earlier rows whose step comes before the
    first step logged now; the later ones are replayed by the resumed run."""

    def _check_log_dir_exists(self) -> None:
        self._earlier: list[dict[str, str]] = []
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self._earlier = list(csv.DictReader(handle))
            self._fs.rm_file(self.metrics_file_path)

    def save(self) -> None:
        if self._earlier and self.metrics:
            first = min(int(m["step"]) for m in self.metrics)
            kept = [
                {k: v for k, v in row.items() if v != ""}
                for row in self._earlier
                if row.get("step") and int(float(row["step"])) < first
            ]
            self.metrics = kept + self.metrics
            self._earlier = []
        super().save()


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv survives a resume (see _ResumedCSVWriter)."""

    @property
    def experiment(self) -> _ResumedCSVWriter:
        if self._experiment is None:
            if rank_zero_only.rank != 0:
                return super().experiment
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumedCSVWriter(log_dir=self.log_dir)
        return self._experiment
