"""gpu_report.md: what ran (jobs, states, times), the anchor's test metrics, the training
throughput table, and every chain's own study tables."""

from __future__ import annotations

from pathlib import Path


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"


def entry_result(entry: dict, record: dict) -> str:
    jobs = entry["jobs"]
    if "chain" not in entry:
        job = jobs[0]
        if not job.finished:
            return job.state
        import json

        test = json.loads((job.run_dir / "summary.json").read_text()).get("test", {})
        return ", ".join(f"{k}={v:.4f}" for k, v in sorted(test.items()) if isinstance(v, float)) or "no test metrics"
    chain = record.get("chain", {})
    if "unfinished" in chain:
        return f"no chain report: {len(chain['unfinished'])} runs unfinished"
    if "report_error" in chain:
        return f"chain report failed: {chain['report_error']}"
    return f"chain report: {Path(chain['chain_dir']) / 'report.md'}" if "chain_dir" in chain else "running"


def report_lines(entries: dict[str, dict], records: dict[str, dict], smoke: bool, meta: dict) -> list[str]:
    where = (
        "CPU smoke mode (tiny subsets: the numbers check the route, they measure nothing)"
        if smoke
        else f"GPU: {device_name()}"
    )
    budget = f"{meta['budget_s']:.0f} s" if meta.get("budget_s") else "none"
    timing = (
        f"Elapsed {meta.get('elapsed_s', 0):.0f} s (studies {meta.get('studies_s', 0):.0f} s); budget {budget}; "
        f"{meta['max_jobs']} processes at a time, OMP_NUM_THREADS={meta['omp_num_threads']}, "
        f"{meta['cpu_count']} CPUs."
    )
    lines = [
        f"# GPU route report ({where})",
        "",
        timing,
        "",
        "| entry | runs done | failed / skipped / not started | process time (s) | result |",
        "|---|---|---|---|---|",
    ]
    for name, entry in entries.items():
        states = [j.state for j in entry["jobs"]]
        other = (
            f"{states.count('failed')} / {states.count('skipped')} / "
            f"{sum(s in ('not started', 'stopped', 'stopped at the budget') for s in states)}"
        )
        process = sum(j.wall_s or 0 for j in entry["jobs"])
        lines.append(
            f"| {name} | {states.count('done')} of {len(states)} | {other} | {process:.0f} | "
            f"{entry_result(entry, records.get(name, {}))} |"
        )
    failed = [j for e in entries.values() for j in e["jobs"] if j.state not in ("done", "waiting", "running")]
    if failed:
        lines += ["", "Runs that did not finish (their logs are in runs.tar.gz, joblogs/):", ""]
        lines += [f"- {j.key}: {j.state}" + (f" (exit code {j.exit_code})" if j.exit_code else "") for j in failed]
    explain = (
        "Images/s of whole training steps (median after warm-up); TFLOP/s from torch's FlopCounterMode over "
        "one eager step (forward, backward, update; frozen teachers included) against the bf16 peak."
    )
    lines += [
        "",
        "## Training throughput",
        "",
        explain,
        "",
        "| entry | batch | channels_last | compile | images/s | TFLOP/s | of bf16 peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in entries:
        for t in records.get(name, {}).get("throughput", []):
            if "error" in t:
                lines.append(
                    f"| {name} | {t.get('batch_size', '?')} | {t.get('channels_last', '')} | "
                    f"{t.get('compile', '')} | {t['error']} | | |"
                )
            else:
                lines.append(
                    f"| {name} | {t['batch_size']} | {t['channels_last']} | {t['compile']} | "
                    f"{t['images_per_s']:.0f} | {t['tflops']:.2f} | {100 * t['peak_fraction']:.2f} % |"
                )
    for name in entries:
        chain = records.get(name, {}).get("chain", {})
        report = Path(chain["chain_dir"]) / "report.md" if "chain_dir" in chain else None
        if report is not None and report.is_file():
            lines += [
                "",
                f"## {name}: {entries[name]['spec']['chain']}",
                "",
                f"(the same plan as one command: `entries.{name}.command` in gpu_summary.json)",
                "",
                report.read_text(),
            ]
    return lines
