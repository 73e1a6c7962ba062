"""The export step of a run: the module writes its artifacts into a temporary folder, the run's
fields (task, experiment, test metrics, overrides) and the data's (normalisation, input size,
class names) go into the export's own card (tasks.io.cards.stamp: no second card beside it), and
the folder becomes `<run dir>/export` only when everything is written. An interrupted export
leaves no half file under export/, and paths written inside point at the final folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.io import cards, files

_TEXT = (".json", ".yaml", ".yml", ".txt", ".md")


def _moved(value: Any, temp: Path, final: Path) -> Any:
    return str(value).replace(str(temp), str(final)) if isinstance(value, (str, Path)) else value


def export_run(model: Any, export_dir: Path, run: dict[str, Any], data: dict[str, Any] | None = None) -> dict[str, Any]:
    """`model.export_artifacts(dir)` into export_dir, all or nothing, with `run` and `data`
    written into its card(s). Returns the artifact paths."""
    export_dir = Path(export_dir)
    with files.complete_folder(export_dir) as temp:
        exports = {k: _moved(v, temp, export_dir) for k, v in (model.export_artifacts(temp) or {}).items()}
        cards.stamp(temp, run, data or {})
        for path in temp.rglob("*"):
            if path.is_file() and path.suffix in _TEXT:
                text = path.read_text(encoding="utf-8", errors="strict")
                if str(temp) in text:
                    path.write_text(text.replace(str(temp), str(export_dir)), encoding="utf-8")
    return exports
