"""The results table of a DeRy chain: every zoo member (parameters, FLOPs, test accuracy)
beside every reassembled network (budget, blocks, parameters, trainable parameters, FLOPs,
test accuracy over its seeds with mean, std and the 95 % Student-t CI of tasks.studies.study), and
NASWOT's Kendall tau against the members' test accuracy, as markdown.

    python -m dery.report logs/chains/dery_digits/<stamp>      # also writes dery_table.md there
    python -m dery.report chain=<chain dir> hydra.run.dir=<dir>  # as the last stage of a chain
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from tasks.io.files import read_json, read_yaml, write_text
from tasks.run.summary import is_finished, write_summary
from tasks.studies.study import Estimate


def _summaries(chain_dir: Path) -> dict[str, list[dict]]:
    """Stage name -> the summaries of its runs (one per seed for seeded stages)."""
    runs: dict[str, list[dict]] = {}
    for path in sorted([*chain_dir.glob("*/summary.json"), *chain_dir.glob("*/seed*/summary.json")]):
        stage = path.parent.parent.name if path.parent.name.startswith("seed") else path.parent.name
        summary = read_json(path, "Stage summary")
        if is_finished(summary):  # an interrupted stage is not a result
            runs.setdefault(stage, []).append(summary)
    return runs


def _option(summary: dict, key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in summary.get("overrides", []) if o.startswith(key + "=")), None)


def _accuracy(values: list[float]) -> tuple[str, str, str]:
    """(n, mean ± std, 95 % CI) cells."""
    if not values:
        return "0", "–", "–"
    est = Estimate.of(values)
    spread = f"{est.mean:.4f} ± {est.std:.4f}" if est.std is not None else f"{est.mean:.4f} ± –"
    return str(est.n), spread, (f"[{est.ci[0]:.4f}, {est.ci[1]:.4f}]" if est.ci else "–")


def table(chain_dir: Path) -> str:
    runs = _summaries(chain_dir)
    lines = [
        "| network | parameters | trainable | MFLOPs | n | test acc mean ± std | 95 % CI |",
        "|---|---|---|---|---|---|---|",
    ]
    similarity = next((s[0] for s in runs.values() if s[0].get("stage") == "similarity"), None)
    if similarity:
        for name, member in read_json(similarity["zoo"], "The similarity run's zoo.json")["members"].items():
            acc = [member["accuracy"]] if member.get("accuracy") is not None else []
            flops = f"{member['flops'] / 1e6:.1f}" if member.get("flops") else "–"
            lines.append(
                f"| zoo: {name} ({member['arch']}) | {member['params'] / 1e6:.3f}M | all | {flops} | "
                + " | ".join(_accuracy(acc))
                + " |"
            )
    trained = []
    for stage, summaries in runs.items():
        spec_path = _option(summaries[0], "model.spec")
        if spec_path and Path(spec_path).is_file():
            trained.append((stage, summaries, read_yaml(spec_path, "DeRy spec")))
    for _stage, summaries, spec in sorted(trained, key=lambda t: (t[2]["params"], t[0])):
        mode = _option(summaries[0], "model.mode") or "frozen"
        init = _option(summaries[0], "model.init") or "zoo"
        trainable = spec["new_params"] if mode == "frozen" else spec["params"]
        blocks = " + ".join(f"{b['member']}[{b['stage']}]" for b in spec["blocks"])
        budget = (spec.get("budget") or {}).get("params")
        kind = f"{mode}, random init" if init == "random" else mode
        label = f"DeRy <= {budget / 1e6:.2f}M params, {kind}" if budget else f"DeRy, {kind}"
        acc = [s["test"]["test/acc"] for s in summaries if s.get("test", {}).get("test/acc") is not None]
        lines.append(
            f"| {label} ({blocks}) | {spec['params'] / 1e6:.3f}M | {trainable / 1e6:.3f}M | "
            f"{spec['flops'] / 1e6:.1f} | " + " | ".join(_accuracy(acc)) + " |"
        )
    text = "\n".join(lines) + "\n"
    searches = [s[0] for s in runs.values() if s[0].get("stage") == "search" and s[0].get("kendall_tau")]
    if searches:
        tau = searches[0]["kendall_tau"]
        members = tau.get("members", {}).items()
        scores = ", ".join(f"{n} {m['naswot']:.3f} (acc {m['accuracy']:.4f})" for n, m in members)
        value = "–" if tau.get("tau") is None else f"{tau['tau']:+.3f} (p = {tau.get('p_value', float('nan')):.3f})"
        text += (
            f"\nNASWOT against the members' test accuracy: Kendall tau {value}; NASWOT per member: {scores or '–'}.\n"
        )
    return text


def _stage_args(argv: list[str]) -> tuple[Path | None, Path | None]:
    """(chain dir, run dir) from `chain=<dir> hydra.run.dir=<dir>` (the chain-stage form)."""
    values = dict(a.split("=", 1) for a in argv if "=" in a)
    chain = values.get("chain")
    run_dir = values.get("hydra.run.dir")
    return (Path(chain).resolve() if chain else None), (Path(run_dir) if run_dir else None)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if unknown := [a for a in argv if "=" in a and a.split("=", 1)[0] not in ("chain", "hydra.run.dir")]:
        raise SystemExit(
            f"error: unknown argument(s) {unknown}. dery.report takes <chain dir>, or chain=<dir> "
            "[hydra.run.dir=<dir>]."
        )
    chain_dir, run_dir = _stage_args(argv)
    if chain_dir is None:
        if len(argv) != 1 or argv[0].startswith("-"):
            raise SystemExit(__doc__)
        chain_dir = Path(argv[0])
    if not any(chain_dir.glob("*/summary.json")):
        raise SystemExit(
            f"error: no stage summaries under {chain_dir}. Point it at a chain dir: logs/chains/dery_digits/<stamp>."
        )
    text = table(chain_dir)
    write_text(chain_dir / "dery_table.md", text)
    print(text)
    if run_dir is not None:  # a chain stage: tasks.studies.chain waits for its summary.json
        run_dir.mkdir(parents=True, exist_ok=True)
        summary = {
            "stage": "report",
            "task_name": "dery_report",
            "table": text,
            "file": str(chain_dir / "dery_table.md"),
            "finished": datetime.now().isoformat(timespec="seconds"),
        }
        write_summary(run_dir / "summary.json", summary)


def command() -> None:
    """`kt-dery-report` (or `python -m dery.report`): a user mistake is one message, exit 2."""
    from tasks.run.boundary import guarded

    guarded("dery.report")(main)()


if __name__ == "__main__":
    command()
