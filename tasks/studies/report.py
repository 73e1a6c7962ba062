"""Gather the summary.json of many runs (a multirun sweep, several seeds, a chain) into the
study harness's table: n, mean ± std and a 95 % CI per group, and with --baseline the
paired difference of every group against that one, plus a bar plot with CI whiskers.

    kt-report logs/classify_digits/multiruns/<sweep> --metric test/acc --out reports/digits
    kt-report <sweep a> <sweep b> --metric test/acc --baseline "classify_digits"
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from tasks.io.files import read_json
from tasks.io.places import require_writable
from tasks.run.boundary import guarded
from tasks.run.summary import is_finished
from tasks.studies.study import rows_from_summaries, write_study

IGNORED_OVERRIDES = ("seed=", "hydra.", "resume=", "paths.", "logger=", "trainer.devices=", "trainer.accelerator=")


def find_summaries(paths: Iterable[str | Path]) -> list[dict]:
    """Every summary.json of a finished run at or below the given paths, loaded, with its path;
    interrupted runs are left out (and named on stderr)."""
    found, interrupted = [], []
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(root.rglob("summary.json"))
        for file in files:
            summary = read_json(file, "Run summary", "Remove it or re-run that job.")
            if not is_finished(summary):
                interrupted.append(str(file.parent))
                continue
            summary["_path"] = str(file)
            found.append(summary)
    if interrupted:
        print(f"left out {len(interrupted)} interrupted run(s), not finished: {interrupted}", file=sys.stderr)
    return found


def default_label(summary: dict) -> str:
    """Experiment plus the overrides that are not about seeds, paths or devices."""
    kept = [
        o
        for o in summary.get("overrides", [])
        if not o.startswith(IGNORED_OVERRIDES) and not o.startswith("experiment=")
    ]
    return " ".join([summary.get("experiment") or summary.get("task_name", "?"), *kept])


@guarded("kt-report")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run dirs, sweep dirs or summary.json files")
    parser.add_argument("--metric", action="append", help="metric(s) to tabulate (default: every test metric)")
    parser.add_argument(
        "--baseline", default=None, help="label of the row the others are compared with (paired over seeds)"
    )
    parser.add_argument("--lower-is-better", action="store_true", help="for losses and errors such as NME")
    parser.add_argument(
        "--out", default=None, help="folder for report.md, report.json and report.png (default: the first path)"
    )
    args = parser.parse_args(argv)
    summaries = find_summaries(args.paths)
    if not summaries:
        raise SystemExit(
            f"error: no summary.json under {args.paths}. Point kt-report at run or sweep dirs of finished runs."
        )
    metrics = (
        args.metric
        or sorted({k for s in summaries for k in s.get("test", {})})
        or sorted({k for s in summaries for k in s.get("final", {})})
    )
    groups: dict[str, list[dict]] = defaultdict(list)
    for summary in summaries:
        groups[default_label(summary)].append(summary)
    absent = [m for m in metrics if not any(m in s.get("test", {}) or m in s.get("final", {}) for s in summaries)]
    if absent:
        known = sorted({k for s in summaries for section in ("test", "final") for k in s.get(section, {})})
        raise SystemExit(f"error: no run has the metric(s) {absent}. Metrics these runs have: {known}.")
    if args.baseline and args.baseline not in groups:
        raise SystemExit(f"error: --baseline '{args.baseline}' is not a row label. Labels: {sorted(groups)}.")
    out = Path(args.out or (args.paths[0] if Path(args.paths[0]).is_dir() else Path(args.paths[0]).parent))
    require_writable(out, "The report folder", "Pass --out <a folder you can write>.")
    tables = []
    for i, metric in enumerate(metrics):
        try:
            rows = rows_from_summaries(groups, metric)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        name = "report" if i == 0 else "report_" + metric.replace("/", "_")
        tables.append(
            write_study(out, rows, metric, args.baseline, name=name, higher_is_better=not args.lower_is_better)
        )
    print("\n".join(tables))
    print(f"written: {out / 'report.md'}, report.json, report.png ({len(summaries)} runs)", file=sys.stderr)


if __name__ == "__main__":
    main()
