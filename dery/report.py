"""The results table of a DeRy chain: every zoo member (parameters, FLOPs, test accuracy)
beside every reassembled network (budget, blocks, parameters, trainable parameters, FLOPs,
test accuracy of its frozen and full training), as markdown.

    python -m dery.report logs/chains/dery_digits/<stamp>      # also writes dery_table.md there
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def _summaries(chain_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(chain_dir.glob("*/summary.json"))}


def _option(summary: dict, key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in summary.get("overrides", []) if o.startswith(key + "=")), None)


def table(chain_dir: Path) -> str:
    runs = _summaries(chain_dir)
    lines = ["| network | parameters | trainable | MFLOPs | test acc |", "|---|---|---|---|---|"]
    zoo = next((json.loads(Path(s["zoo"]).read_text()) for s in runs.values() if s.get("stage") == "similarity"), None)
    if zoo:
        for name, member in zoo["members"].items():
            acc = f"{member['accuracy']:.4f}" if member.get("accuracy") is not None else "–"
            flops = f"{member['flops'] / 1e6:.1f}" if member.get("flops") else "–"
            lines.append(f"| zoo: {name} ({member['arch']}) | {member['params'] / 1e6:.3f}M | all | {flops} | {acc} |")
    trained = [(s, yaml.safe_load(Path(_option(s, "model.spec")).read_text())) for s in runs.values()
               if _option(s, "model.spec") and Path(_option(s, "model.spec")).is_file()]
    for summary, spec in sorted(trained, key=lambda t: (t[1]["params"], _option(t[0], "model.mode") or "frozen")):
        mode = _option(summary, "model.mode") or "frozen"
        trainable = spec["new_params"] if mode == "frozen" else spec["params"]
        blocks = " + ".join(f"{b['member']}[{b['stage']}]" for b in spec["blocks"])
        budget = (spec.get("budget") or {}).get("params")
        label = f"DeRy <= {budget / 1e6:.2f}M params, {mode}" if budget else f"DeRy, {mode}"
        acc = summary.get("test", {}).get("test/acc")
        lines.append(f"| {label} ({blocks}) | {spec['params'] / 1e6:.3f}M | {trainable / 1e6:.3f}M | "
                     f"{spec['flops'] / 1e6:.1f} | {'–' if acc is None else f'{acc:.4f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chain_dir", help="the dir of a finished DeRy chain (python -m tasks.chain dery_digits)")
    args = parser.parse_args(argv)
    chain_dir = Path(args.chain_dir)
    if not any(chain_dir.glob("*/summary.json")):
        raise SystemExit(f"error: no stage summaries under {chain_dir}. Point it at a chain dir: logs/chains/dery_digits/<stamp>.")
    text = table(chain_dir)
    (chain_dir / "dery_table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
