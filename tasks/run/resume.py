"""Resume: `resume=auto` continues the newest unfinished run of the same task in its own run
dir (same W&B run id); `resume=<run dir or .ckpt>` continues that one."""

from __future__ import annotations

from pathlib import Path

from tasks.errors import UserError

LAST = Path("checkpoints") / "last.ckpt"


def latest_unfinished_run(runs_root: Path) -> Path | None:
    """The run dir under `runs_root` with the newest last.ckpt and no summary.json yet."""
    candidates = [
        p.parent.parent for p in runs_root.glob(f"*/{LAST}") if not (p.parent.parent / "summary.json").exists()
    ]
    return max(candidates, key=lambda d: (d / LAST).stat().st_mtime) if candidates else None


def resume_run_dir(resume: str | None, runs_root: Path) -> Path | None:
    """The run dir a resumed run must write into, or None for a new one."""
    if not resume:
        return None
    if resume == "auto":
        return latest_unfinished_run(runs_root)
    path = Path(resume).expanduser().resolve()
    if path.is_dir():
        if not (path / LAST).is_file():
            raise UserError(
                f"resume={resume}: {path / LAST} does not exist. Point resume= at a run dir that has "
                "checkpoints/last.ckpt, or at a .ckpt file."
            )
        return path
    if path.is_file():
        # A checkpoint inside a run dir continues that run dir; one from elsewhere starts a new dir.
        return path.parent.parent if path.parent.name == "checkpoints" else None
    raise UserError(f"resume={resume}: no such file or directory. Use resume=auto, a run dir, or a .ckpt path.")


def resume_checkpoint(resume: str | None, output_dir: Path) -> str | None:
    """The checkpoint to hand to trainer.fit."""
    if not resume:
        return None
    if resume == "auto" or Path(resume).expanduser().is_dir():
        last = output_dir / LAST
        return str(last) if last.is_file() else None
    return str(Path(resume).expanduser().resolve())
