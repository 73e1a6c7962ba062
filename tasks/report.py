"""Gather the summary.json of many runs (a multirun sweep, several seeds, a chain) into a
markdown table with mean and std per group, plus a bar plot.

    kt-report logs/classify_digits/multiruns/<sweep> --metric test/acc --out reports/digits
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Iterable

IGNORED_OVERRIDES = ("seed=", "hydra.", "resume=", "paths.", "logger=", "trainer.devices=", "trainer.accelerator=")


def find_summaries(paths: Iterable[str | Path]) -> list[dict]:
    """Every summary.json at or below the given paths, loaded, with its path."""
    found = []
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(root.rglob("summary.json"))
        for file in files:
            summary = json.loads(file.read_text())
            summary["_path"] = str(file)
            found.append(summary)
    return found


def default_label(summary: dict) -> str:
    """Experiment plus the overrides that are not about seeds, paths or devices."""
    kept = [o for o in summary.get("overrides", []) if not o.startswith(IGNORED_OVERRIDES) and not o.startswith("experiment=")]
    return " ".join([summary.get("experiment") or summary.get("task_name", "?"), *kept])


def metric_value(summary: dict, metric: str) -> float | None:
    for section in ("test", "final"):
        if metric in summary.get(section, {}):
            return float(summary[section][metric])
    return None


def aggregate(groups: dict[str, list[dict]], metrics: list[str]) -> list[dict]:
    """One row per group: n, and mean/std of every metric (std 0 for a single run)."""
    rows = []
    for label, runs in groups.items():
        row = {"label": label, "n": len(runs)}
        for metric in metrics:
            values = [v for v in (metric_value(r, metric) for r in runs) if v is not None]
            row[metric] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)) if values else None
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], metrics: list[str], label_header: str = "run") -> str:
    lines = [f"| {label_header} | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for row in rows:
        cells = [f"{m[0]:.4f} ± {m[1]:.4f}" if (m := row[metric]) else "–" for metric in metrics]
        lines.append(f"| {row['label']} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_plot(rows: list[dict], metric: str, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.get(metric)]
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(shown) + 1), 3.6))
    means = [r[metric][0] for r in shown]
    ax.bar(range(len(shown)), means, yerr=[r[metric][1] for r in shown], capsize=4, color="#4C72B0")
    ax.set_xticks(range(len(shown)), [r["label"] for r in shown], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    if means:
        low = min(m - r[metric][1] for m, r in zip(means, shown))
        ax.set_ylim(max(0.0, low - 0.05 * abs(low) - 0.01), None)
    ax.set_title(title or f"{metric}: mean ± std")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run dirs, sweep dirs or summary.json files")
    parser.add_argument("--metric", action="append", help="metric(s) to tabulate (default: every test metric)")
    parser.add_argument("--out", default=None, help="folder for report.md and report.png (default: the first path)")
    args = parser.parse_args(argv)
    summaries = find_summaries(args.paths)
    if not summaries:
        raise SystemExit(f"error: no summary.json under {args.paths}. Point kt-report at run or sweep dirs of finished runs.")
    metrics = args.metric or sorted({k for s in summaries for k in s.get("test", {})}) or sorted({k for s in summaries for k in s.get("final", {})})
    groups: dict[str, list[dict]] = defaultdict(list)
    for summary in summaries:
        groups[default_label(summary)].append(summary)
    rows = aggregate(groups, metrics)
    out = Path(args.out or (args.paths[0] if Path(args.paths[0]).is_dir() else Path(args.paths[0]).parent))
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, metrics)
    (out / "report.md").write_text(table)
    bar_plot(rows, metrics[0], out / "report.png")
    print(table)
    print(f"written: {out / 'report.md'}, {out / 'report.png'} ({len(summaries)} runs)")


if __name__ == "__main__":
    main()
