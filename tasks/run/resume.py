"""Resume: `resume=auto` continues the newest unfinished run of the same task in its own run
dir (same W&B run id); `resume=<run dir or .ckpt>` continues that one. A run dir's resumable
checkpoints are checkpoints/last.ckpt and the hpc_ckpt_<n>.ckpt that Lightning saves in the run
dir when SLURM asks a job to requeue (SIGUSR1); the newest of them is continued. A run whose
summary says "interrupted" is unfinished."""

from __future__ import annotations

from pathlib import Path

from tasks.errors import UserError
from tasks.run.summary import finished

LAST = Path("checkpoints") / "last.ckpt"
REQUEUE_PATTERN = "hpc_ckpt_*.ckpt"  # Lightning's name for the checkpoint of a SLURM requeue


def resumable_checkpoint(run_dir: Path) -> Path | None:
    """The newest of the run dir's last.ckpt and requeue checkpoints, if any."""
    found = [p for p in [run_dir / LAST, *run_dir.glob(REQUEUE_PATTERN)] if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def latest_unfinished_run(runs_root: Path) -> Path | None:
    """The run dir under `runs_root` with the newest resumable checkpoint that has not finished."""
    newest: dict[Path, float] = {}
    for run_dir in (p for p in runs_root.glob("*") if p.is_dir()):
        checkpoint = resumable_checkpoint(run_dir)
        if checkpoint is not None and not finished(run_dir):
            newest[run_dir] = checkpoint.stat().st_mtime
    return max(newest, key=newest.__getitem__) if newest else None


def resume_run_dir(resume: str | None, runs_root: Path) -> Path | None:
    """The run dir a resumed run must write into, or None for a new one."""
    if not resume:
        return None
    if resume == "auto":
        return latest_unfinished_run(runs_root)
    path = Path(resume).expanduser().resolve()
    if path.is_dir():
        if resumable_checkpoint(path) is None:
            raise UserError(
                f"resume={resume}: {path / LAST} does not exist. Point resume= at a run dir that has "
                "checkpoints/last.ckpt, or at a .ckpt file."
            )
        return path
    if path.is_file():
        # A checkpoint inside a run dir continues that run dir; one from elsewhere starts a new dir.
        if path.parent.name == "checkpoints":
            return path.parent.parent
        return path.parent if path.match(REQUEUE_PATTERN) else None
    raise UserError(f"resume={resume}: no such file or directory. Use resume=auto, a run dir, or a .ckpt path.")


def resume_checkpoint(resume: str | None, output_dir: Path) -> str | None:
    """The checkpoint to hand to trainer.fit."""
    if not resume:
        return None
    if resume == "auto" or Path(resume).expanduser().is_dir():
        found = resumable_checkpoint(output_dir)
        return str(found) if found is not None else None
    return str(Path(resume).expanduser().resolve())
