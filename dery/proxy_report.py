"""The report of the proxy-validation study (chain `dery_proxy_study`): for every proxy scored
by the draw stage (dery/proxy_study.py), Kendall tau and Spearman rho against the candidates'
trained test accuracy with bootstrap 95 % CIs over candidates, the top-1 regret, the top-5 hit
rate and the seconds a score costs (dery/ranking.py); the seed noise of an accuracy from the
candidates trained with several seeds; a scatter plot per proxy. Written to proxy_table.md,
proxy_table.json and plots/proxy_<name>.png in the chain dir.

    python -m dery.proxy_report logs/chains/dery_proxy_study/<stamp>
    python -m dery.proxy_report chain=<chain dir> hydra.run.dir=<dir>     # as the chain's last stage
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from dery.ranking import rank_report
from tasks.errors import UserError
from tasks.io.files import read_json, write_text
from tasks.run.summary import is_finished, write_summary

DRAW_STAGE = "draw"


def trained_accuracy(chain_dir: Path, candidate: int) -> list[float]:
    """Test accuracies of a candidate's finished training runs (one per seed)."""
    stage = chain_dir / f"cand_{candidate:02d}"
    values = []
    for path in sorted([*stage.glob("summary.json"), *stage.glob("seed*/summary.json")]):
        summary = read_json(path, "Training summary")
        acc = summary.get("test", {}).get("test/acc")
        if is_finished(summary) and acc is not None:
            values.append(float(acc))
    return values


def collect(chain_dir: Path) -> tuple[list[dict], dict[str, Any]]:
    """The draw's candidates with their mean trained accuracy (those trained), and the draw's summary."""
    summary_path = chain_dir / DRAW_STAGE / "summary.json"
    if not summary_path.is_file():
        raise UserError(
            f"{chain_dir} has no {DRAW_STAGE}/summary.json. Point this at a dery_proxy_study chain dir "
            "(python -m tasks.chain dery_proxy_study)."
        )
    draw = read_json(summary_path, "The draw stage's summary")
    rows = read_json(draw["candidates"], "The draw's candidates.json", keys=("candidates",))["candidates"]
    for row in rows:
        row["accuracies"] = trained_accuracy(chain_dir, row["candidate"])
        row["accuracy"] = float(np.mean(row["accuracies"])) if row["accuracies"] else None
    return [r for r in rows if r["accuracy"] is not None], draw


def evaluate(rows: list[dict], proxies: list[str], seed: int = 0) -> dict[str, dict[str, Any]]:
    """rank_report of every proxy with a score on every trained candidate, and its mean cost."""
    acc = [r["accuracy"] for r in rows]
    out = {}
    for name in proxies:
        scores = [r["scores"].get(name) for r in rows]
        if len(rows) < 2 or any(s is None for s in scores):
            continue  # e.g. zoo_acc of a zoo without recorded accuracies
        out[name] = {
            **rank_report(scores, acc, seed=seed),
            "seconds": float(np.mean([r["seconds"][name] for r in rows])),
        }
    return out


def seed_noise(rows: list[dict]) -> dict[str, Any] | None:
    """Mean over multi-seed candidates of the std of their accuracy over seeds."""
    stds = [float(np.std(r["accuracies"], ddof=1)) for r in rows if len(r["accuracies"]) > 1]
    return {"candidates": len(stds), "mean_std": float(np.mean(stds))} if stds else None


def _num(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:+.3f}"


def _ci(low_high) -> str:
    low, high = low_high
    return "–" if np.isnan(low) else f"[{low:+.2f}, {high:+.2f}]"


def markdown(results: dict[str, dict[str, Any]], rows: list[dict], noise: dict | None) -> str:
    lines = [
        f"Proxies against trained test accuracy over {len(rows)} candidates "
        "(CIs: bootstrap over candidates, 2,000 resamples).",
        "",
        "| proxy | Kendall τ | 95 % CI | Spearman ρ | 95 % CI | top-1 regret | top-5 hits | s / candidate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(results.items(), key=lambda kv: -np.nan_to_num(kv[1]["kendall_tau"], nan=-2.0)):
        lines.append(
            f"| {name} | {_num(r['kendall_tau'])} | {_ci(r['kendall_ci'])} | {_num(r['spearman_rho'])} | "
            f"{_ci(r['spearman_ci'])} | {100 * r['top1_regret']:.2f} pts | {r['top5_hit_rate']:.1f} | "
            f"{r['seconds']:.3f} |"
        )
    acc = [r["accuracy"] for r in rows]
    best = rows[int(np.argmax(acc))]["candidate"]
    lines += ["", f"Trained accuracy: {min(acc):.4f} to {max(acc):.4f} (best: cand_{best:02d})."]
    if noise:
        lines.append(
            f"Seed noise: the {noise['candidates']} candidates trained with several seeds have a mean std of "
            f"{100 * noise['mean_std']:.2f} points over seeds."
        )
    return "\n".join(lines) + "\n"


def scatter(rows: list[dict], name: str, result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    x, y = [r["scores"][name] for r in rows], [r["accuracy"] for r in rows]
    ax.scatter(x, y, s=18)
    for r in rows:
        if len(r["accuracies"]) > 1:
            ax.errorbar(r["scores"][name], r["accuracy"], yerr=np.std(r["accuracies"], ddof=1), color="gray", lw=1)
    if name in ("params", "flops"):
        ax.set_xscale("log")
    ax.set_xlabel(name)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{name}: τ = {result['kendall_tau']:+.2f}, regret {100 * result['top1_regret']:.1f} pts", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(chain_dir: Path) -> dict[str, Any]:
    rows, draw = collect(chain_dir)
    if len(rows) < 2:
        raise UserError(
            f"{chain_dir}: only {len(rows)} candidates have a finished training run; the study ranks at least 2."
        )
    results = evaluate(rows, draw["proxies"], seed=draw["draw"]["seed"])
    noise = seed_noise(rows)
    text = markdown(results, rows, noise)
    plots = [str(scatter(rows, n, r, chain_dir / "plots" / f"proxy_{n}.png")) for n, r in results.items()]
    payload = {"proxies": results, "seed_noise": noise, "candidates": rows, "draw": draw["draw"], "plots": plots}
    write_text(chain_dir / "proxy_table.md", text)
    write_text(chain_dir / "proxy_table.json", json.dumps(payload, indent=2))
    return {"table": text, "file": str(chain_dir / "proxy_table.md"), **payload}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    values = dict(a.split("=", 1) for a in argv if "=" in a)
    if unknown := sorted(set(values) - {"chain", "hydra.run.dir"}):
        raise UserError(
            f"unknown argument(s) {unknown}. dery.proxy_report takes <chain dir>, or chain=<dir> [hydra.run.dir=<dir>]."
        )
    positional = [a for a in argv if "=" not in a]
    chain = values.get("chain") or (positional[0] if len(positional) == 1 else None)
    if chain is None:
        raise UserError("Give the chain dir: python -m dery.proxy_report logs/chains/dery_proxy_study/<stamp>")
    result = report(Path(chain).resolve())
    print(result["table"])
    if "hydra.run.dir" in values:  # a chain stage: the chain runner waits for its summary.json
        run_dir = Path(values["hydra.run.dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        summary = {
            "stage": "proxy_report",
            "task_name": "dery_proxy_report",
            "finished": datetime.now().isoformat(timespec="seconds"),
        }
        write_summary(
            run_dir / "summary.json",
            {**summary, "table": result["table"], "file": result["file"], "proxies": result["proxies"]},
        )


def command() -> None:
    """`kt-dery-proxy-report` (or `python -m dery.proxy_report`): a user mistake is one message, exit 2."""
    from tasks.run.boundary import guarded

    guarded("dery.proxy_report")(main)()


if __name__ == "__main__":
    command()
