"""Checks that a data folder has its documented layout, failing with the layout and where
to get the data."""

from __future__ import annotations

from pathlib import Path

from tasks.errors import UserError


def require_layout(root: str | Path, required: list[str], name: str, layout: str, source: str) -> Path:
    """Raise a UserError naming the missing entries, the expected layout and the source."""
    root = Path(root).expanduser()
    missing = [r for r in required if not (root / r).exists()]
    if missing:
        raise UserError(
            f"{name} data not found under '{root}' (missing: {', '.join(missing[:5])}).\n"
            f"Expected layout:\n{layout.rstrip()}\n"
            f"Get it from: {source}\n"
            "Then set data.root=<folder> (or paths.data_dir=<folder that holds it>)."
        )
    return root
