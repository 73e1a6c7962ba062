"""The study harness: every row of a seeded study gets n, mean, std and a 95 % Student-t
confidence interval, and every row is compared with a named baseline row by the paired
difference over matching seeds, with its own CI and a verdict in words ("within noise"
when the CI holds 0). Rows with n = 1 show no spread ("–"), never "± 0.0000".

Outputs: a markdown table, a JSON file with every seed's value, and a bar plot with CI
whiskers and the seeds as dots. `kt-report` and `tasks.studies.chain` both report through here."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

from tasks.io import files

CONFIDENCE = 0.95
DASH = "–"


@dataclass
class Estimate:
    """Mean, std and the Student-t CI of a sample; std and CI are None when n < 2."""

    n: int
    mean: float
    std: float | None
    ci: tuple[float, float] | None

    @classmethod
    def of(cls, values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
        if not values:
            raise ValueError("an estimate needs at least one value")
        n, mean = len(values), statistics.fmean(values)
        if n < 2:
            return cls(n, mean, None, None)
        std = statistics.stdev(values)
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
        return cls(n, mean, std, (mean - half, mean + half))

    def as_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95": list(self.ci) if self.ci else None}


@dataclass
class Row:
    """One row of a study: a label and its metric value per seed."""

    label: str
    values: dict[int, float]
    stage: str | None = None
    estimate: Estimate | None = None
    paired: Estimate | None = None
    diffs: dict[int, float] = field(default_factory=dict)
    verdict: str = ""

    def __post_init__(self):
        if self.values:
            self.estimate = Estimate.of([self.values[s] for s in sorted(self.values)])


def verdict(paired: Estimate | None, n_pairs: int, higher_is_better: bool = True) -> str:
    """The paired difference in words."""
    if n_pairs == 0:
        return "no matching seeds"
    if paired is None or paired.ci is None:
        return "one paired seed: no CI"
    low, high = paired.ci
    if low <= 0 <= high:
        return "within noise"
    better = (low > 0) == higher_is_better
    return "better than baseline" if better else "worse than baseline"


def compare(rows: list[Row], baseline: str | None, higher_is_better: bool = True) -> list[Row]:
    """Fill every row's paired difference against the row labelled `baseline`."""
    if baseline is None:
        return rows
    base = next((r for r in rows if r.label == baseline), None)
    if base is None:
        raise ValueError(f"baseline row '{baseline}' is not among the rows {[r.label for r in rows]}")
    for row in rows:
        if row is base:
            row.verdict = "baseline"
            continue
        seeds = sorted(set(row.values) & set(base.values))
        row.diffs = {s: row.values[s] - base.values[s] for s in seeds}
        row.paired = Estimate.of(list(row.diffs.values())) if seeds else None
        row.verdict = verdict(row.paired, len(seeds), higher_is_better)
    return rows


def _fmt(x: float | None, digits: int, sign: bool = False) -> str:
    if x is None:
        return DASH
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ci(est: Estimate | None, digits: int, sign: bool = False) -> str:
    if est is None or est.ci is None:
        return DASH
    return f"[{_fmt(est.ci[0], digits, sign)}, {_fmt(est.ci[1], digits, sign)}]"


def markdown(
    rows: list[Row], metric: str, baseline: str | None = None, digits: int = 4, label_header: str = "row"
) -> str:
    """The study table: n, mean ± std, 95 % CI, and the paired difference with its verdict."""
    header = [label_header, "n", f"{metric} mean ± std", "95 % CI"]
    if baseline:
        header += [f"Δ vs {baseline} (paired)", "Δ 95 % CI", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        est = row.estimate
        if est is None:
            cells = [row.label, "0", DASH, DASH] + ([DASH, DASH, "not run"] if baseline else [])
        else:
            spread = (
                f"{_fmt(est.mean, digits)} ± {_fmt(est.std, digits)}"
                if est.std is not None
                else f"{_fmt(est.mean, digits)} ± {DASH}"
            )
            cells = [row.label, str(est.n), spread, _ci(est, digits)]
            if baseline:
                if row.verdict == "baseline":
                    cells += [DASH, DASH, "baseline"]
                else:
                    mean = row.paired.mean if row.paired else None
                    n_pairs = f" (n = {row.paired.n})" if row.paired else ""
                    cells += [_fmt(mean, digits, sign=True) + n_pairs, _ci(row.paired, digits, sign=True), row.verdict]
        lines.append("| " + " | ".join(cells) + " |")
    note = f"\nMean ± std over seeds; 95 % CIs are Student-t ({DASH} where n = 1)."
    if baseline:
        note += (
            f" Δ is the paired difference against '{baseline}' over matching seeds; "
            "'within noise' means its 95 % CI holds 0."
        )
    return "\n".join(lines) + "\n" + note + "\n"


def as_json(rows: list[Row], metric: str, baseline: str | None) -> dict:
    return {
        "metric": metric,
        "baseline": baseline,
        "confidence": CONFIDENCE,
        "rows": [
            {
                "label": r.label,
                "stage": r.stage,
                "values": {str(s): v for s, v in sorted(r.values.items())},
                **({"estimate": r.estimate.as_dict()} if r.estimate else {"estimate": None}),
                "paired": (
                    {**r.paired.as_dict(), "diffs": {str(s): d for s, d in r.diffs.items()}} if r.paired else None
                ),
                "verdict": r.verdict,
            }
            for r in rows
        ],
    }


def bar_plot(rows: list[Row], metric: str, path: Path, title: str = "") -> Path:
    """Bars at the means, 95 % CI whiskers, every seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.estimate]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(shown) + 1.5), 3.8))
    for i, row in enumerate(shown):
        est = row.estimate
        err = [[est.mean - est.ci[0]], [est.ci[1] - est.mean]] if est.ci else None
        ax.bar(i, est.mean, color="#8c8c8c" if row.verdict == "baseline" else "#4C72B0", alpha=0.85)
        if err:
            ax.errorbar(i, est.mean, yerr=err, color="black", capsize=5, lw=1.2)
        values = [row.values[s] for s in sorted(row.values)]
        ax.scatter(
            [i + (j - (len(values) - 1) / 2) * 0.08 for j in range(len(values))],
            values,
            s=12,
            color="#DD8452",
            zorder=3,
        )
        ax.annotate(f"n={est.n}", (i, est.mean), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(range(len(shown)), [r.label for r in shown], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    points = [v for r in shown for v in r.values.values()] + [x for r in shown if r.estimate.ci for x in r.estimate.ci]
    if points:
        low, high = min(points), max(points)
        pad = max(0.05 * (high - low), 1e-3)
        ax.set_ylim(low - 4 * pad, high + 2 * pad)
    ax.set_title(title or f"{metric}: mean, 95 % CI, seeds")
    fig.tight_layout()
    try:
        with files.atomic_path(path) as temp:  # a full disk leaves the previous picture, not half a PNG
            fig.savefig(temp, dpi=110)
    finally:
        plt.close(fig)
    return path


def rows_from_summaries(
    groups: Mapping[str, Sequence[dict]], metric: str, stages: Mapping[str, str] | None = None
) -> list[Row]:
    """Rows from {label: [summary.json dicts]}; each summary's `seed` keys its value."""
    rows = []
    for label, summaries in groups.items():
        values = {}
        for summary in summaries:
            value = metric_value(summary, metric)
            if value is None:
                continue
            seed = int(summary.get("seed", 0))
            if seed in values:
                raise ValueError(
                    f"row '{label}' has two runs with seed {seed} ({summary.get('run_dir')}); "
                    "group them under different labels"
                )
            values[seed] = value
        rows.append(Row(label, values, stage=(stages or {}).get(label)))
    return rows


def metric_value(summary: dict, metric: str) -> float | None:
    """A metric from a summary.json: its test section first, then its final (fit) metrics."""
    for section in ("test", "final"):
        if metric in summary.get(section, {}):
            return float(summary[section][metric])
    return None


def write_study(
    out: Path,
    rows: list[Row],
    metric: str,
    baseline: str | None = None,
    name: str = "report",
    title: str = "",
    higher_is_better: bool = True,
    label_header: str = "row",
) -> str:
    """Compare, then write <name>.md, <name>.json and <name>.png into `out`; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    compare(rows, baseline, higher_is_better)
    table = markdown(rows, metric, baseline, label_header=label_header)
    files.write_text(out / f"{name}.md", (f"### {title}\n\n" if title else "") + table)
    files.write_text(out / f"{name}.json", json.dumps(as_json(rows, metric, baseline), indent=2))
    if any(r.estimate for r in rows):
        bar_plot(rows, metric, out / f"{name}.png", title)
    return table
