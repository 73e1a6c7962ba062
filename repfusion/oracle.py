"""The timestep oracle: which t makes the teacher's feature informative, measured over a grid
of fixed t on one teacher, and where the rl policy ended against that curve.

For every t of `grid`: the pooled teacher feature of the train and the `probe.split` images
at that t, the stage-1 probe (the same 3-layer MLP) fitted on the train features
(`probe.seeds` times), and its mean cross-entropy and accuracy on the split. For every t of
`distill.grid`: a short fixed-t
stage-1 run (`python train.py experiment=<distill.experiment> model.timesteps.mode=fixed
...`) and its student's k-NN accuracy. `policy_runs` (rl stage-1 run dirs, or folders of
seed dirs) are read for their last epoch's t histogram: its expected probe cross-entropy
against the best grid point says whether the policy ended where the curve is low. The
picture is plots/timestep_oracle.png; the numbers are in summary.json (with `best_t`, the
best fixed t, for `model.timesteps.fixed_t_from=<this run>`).

    python -m repfusion.oracle teacher.source=<ddpm run>/export/unet
    python -m repfusion.oracle teacher.source=... policy_runs='[<rl run>,<rl run>]' distill.grid=[]
    python -m repfusion.oracle reuse=<oracle run> policy_runs='[<folder of rl seed runs>]'   # redraw only
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import tasks  # noqa: F401  (resolvers)
from repfusion.plots import oracle_figure, plt  # plots sets the Agg backend first
from repfusion.probe import probe_mlp
from repfusion.teacher import latest_export
from tasks.config.location import CONFIG_SOURCE
from tasks.errors import UserError
from tasks.io.files import atomic_path
from tasks.run import interruption
from tasks.run.instantiate import build
from tasks.run.resume import resumable_checkpoint
from tasks.run.stage_app import run_stage
from tasks.run.summary import finished, read_finished

MAKE_ORACLE = "python -m repfusion.oracle teacher.source=<teacher folder> (see docs/repfusion.md)"


@torch.no_grad()
def pooled_features(teacher, images: torch.Tensor, t: int, batch_size: int) -> torch.Tensor:
    """(N, C) float32 pooled teacher features of normalised images at one fixed t."""
    out = []
    for chunk in images.split(batch_size):
        steps = torch.full((chunk.shape[0],), t, dtype=torch.long)
        out.append(teacher(chunk, steps).mean(dim=(2, 3)))
    return torch.cat(out)


def fit_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    num_classes: int,
    epochs: int,
    lr: float,
    batch_size: int,
    hidden: int | None,
    seed: int,
) -> dict[str, float]:
    """The stage-1 probe (input standardised with the train features' statistics) fitted by
    Adam; cross-entropy and accuracy on the evaluation features after the last epoch."""
    mean, std = train_x.mean(0), train_x.std(0, correction=0) + 1e-6
    train_x, eval_x = (train_x - mean) / std, (eval_x - mean) / std
    torch.manual_seed(seed)
    probe = probe_mlp(train_x.shape[1], num_classes, hidden)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(train_x), generator=generator).split(batch_size):
            loss = F.cross_entropy(probe(train_x[index]), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        logits = probe(eval_x)
    return {"ce": F.cross_entropy(logits, eval_y).item(), "acc": (logits.argmax(1) == eval_y).float().mean().item()}


def split_tensors(dataset, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """All (or the first `limit`) images and labels of a split, in [0, 1]."""
    xs, ys = [], []
    seen = 0
    for batch in DataLoader(dataset, batch_size=512, shuffle=False):
        x, y = batch[0], batch[1]
        xs.append(x)
        ys.append(y)
        seen += len(x)
        if limit and seen >= limit:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:limit], y[:limit]) if limit else (x, y)


def probe_curve(cfg: DictConfig, teacher, datamodule) -> list[dict[str, float]]:
    datamodule.setup("fit")
    datamodule.setup("test")
    split = {"val": datamodule.val_set, "test": datamodule.test_set, "train": datamodule.train_set}.get(cfg.probe.split)
    if split is None:
        raise UserError(f"probe.split={cfg.probe.split!r} is not one of ['train', 'val', 'test'].")
    train_x, train_y = split_tensors(datamodule.train_set, cfg.probe.train_images)
    eval_x, eval_y = split_tensors(split, cfg.probe.eval_images)
    train_x, eval_x = datamodule.normalize(train_x), datamodule.normalize(eval_x)
    num_classes = int(getattr(datamodule, "num_classes", 0) or int(train_y.max()) + 1)
    rows = []
    for t in tqdm(list(cfg.grid), desc="probe cross-entropy over t"):
        train_f = pooled_features(teacher, train_x, int(t), cfg.probe.batch_size)
        eval_f = pooled_features(teacher, eval_x, int(t), cfg.probe.batch_size)
        fits = [
            fit_probe(
                train_f,
                train_y,
                eval_f,
                eval_y,
                num_classes,
                cfg.probe.epochs,
                cfg.probe.lr,
                cfg.probe.batch_size,
                cfg.probe.hidden,
                cfg.seed + k,
            )
            for k in range(cfg.probe.seeds)
        ]
        ce = torch.tensor([f["ce"] for f in fits])
        rows.append(
            {
                "t": int(t),
                "ce": ce.mean().item(),
                "ce_std": ce.std().item() if len(fits) > 1 else None,
                "acc": float(np.mean([f["acc"] for f in fits])),
            }
        )
    return rows


def distill_run(cfg: DictConfig, source: str, t: int, out: Path) -> dict[str, Any]:
    """A short fixed-t stage-1 run (skipped when its summary exists already)."""
    run_dir = out / "distill" / f"t{t}"
    if not finished(run_dir):
        command = [
            sys.executable,
            "-m",
            "tasks.train",
            f"experiment={cfg.distill.experiment}",
            f"model.teacher.source={source}",
            "model.timesteps.mode=fixed",
            f"model.timesteps.fixed_t={t}",
            f"seed={cfg.seed}",
            *map(str, cfg.distill.overrides),
            f"hydra.run.dir={run_dir}",
        ]
        if resumable_checkpoint(run_dir) is not None:
            command.append(f"resume={run_dir}")  # an interrupted oracle continues its runs
        print(f"=== oracle: fixed t = {t}: {' '.join(command[1:])}", flush=True)
        # in this folder, like the oracle (relative paths mean the same); a stop of the oracle is passed on to its run
        code = interruption.run_child(command, Path.cwd())
        if code != 0:
            raise UserError(
                f"The fixed-t stage-1 run at t = {t} failed (exit code {code}); its files are in {run_dir}."
            )
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = {**summary.get("final", {}), **summary.get("test", {})}
    return {
        "t": t,
        "run_dir": str(run_dir),
        **{k: metrics[k] for k in ("val/knn_acc", "test/knn_acc", "val/loss_probe") if k in metrics},
    }


def policy_histograms(paths: list[str]) -> list[dict[str, Any]]:
    """The last epoch's t histogram of every rl run under the given dirs."""
    found = []
    for path in (Path(p).expanduser().resolve() for p in paths):
        files = (
            [path / "export" / "timesteps.json"]
            if (path / "export" / "timesteps.json").is_file()
            else sorted(path.glob("*/export/timesteps.json"))
        )
        if not files:
            raise UserError(
                f"policy_runs: no export/timesteps.json at or below {path}. Point it at finished rl stage-1 runs."
            )
        for file in files:
            record = json.loads(file.read_text())
            if record["mode"] == "rl" and record["per_epoch"]:
                found.append(
                    {
                        "run": str(file.parents[1]),
                        "num_timesteps": record["num_timesteps"],
                        "counts": record["per_epoch"][-1],
                    }
                )
    return found


def where_policy_ended(curve: list[dict[str, float]], policy: dict[str, Any]) -> dict[str, Any]:
    """The probe cross-entropy the policy's final t distribution expects (the curve
    interpolated at each histogram bin's centre), against the curve's best point."""
    counts = np.asarray(policy["counts"], dtype=float)
    share = counts / counts.sum()
    edges = np.linspace(0, policy["num_timesteps"], len(counts) + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    grid, ce = np.array([r["t"] for r in curve], dtype=float), np.array([r["ce"] for r in curve])
    expected = float((share * np.interp(centres, grid, ce)).sum())
    best = float(ce.min())
    nonzero = share > 0
    entropy = float(-(share[nonzero] * np.log(share[nonzero])).sum())
    return {
        "run": policy["run"],
        "expected_ce": expected,
        "best_ce": best,
        "ratio": expected / best,
        "ends_low": expected <= 1.10 * best,
        "mean_t": float((share * centres).sum()),
        "bin_entropy": entropy,
        "share": share.tolist(),
    }


def best_timestep(run_dir: str | Path) -> int:
    """The best fixed t an oracle run found (for model.timesteps.fixed_t_from)."""
    return int(read_oracle(run_dir)["best_t"])


def read_oracle(run_dir: str | Path) -> dict[str, Any]:
    summary = read_finished(run_dir, "oracle run", f"Make one with: {MAKE_ORACLE}")
    if summary.get("stage") != "repfusion_oracle":
        path = Path(str(run_dir)).expanduser() / "summary.json"
        raise UserError(f"No finished oracle run at '{run_dir}' ({path}). Make one with: {MAKE_ORACLE}")
    return summary


def teacher_name(source: str) -> str:
    """A teacher's run dir name for titles (<run>/export/unet), else the source itself."""
    path = Path(source)
    return path.parents[1].name if path.name == "unet" and path.parent.name == "export" else source


def resolve_source(cfg: DictConfig) -> str:
    source = str(cfg.teacher.source)
    return str(latest_export(source.split(":", 1)[1], cfg.teacher.runs_dir)) if source.startswith("latest:") else source


def run(cfg: DictConfig, out: Path) -> dict[str, Any]:
    if cfg.reuse:  # redraw an earlier oracle's curve with (new) policies over it
        earlier = read_oracle(cfg.reuse)
        source, curve, distill = earlier["teacher"], earlier["curve"], earlier["distill"]
        num_timesteps = earlier["num_timesteps"]
    else:
        source = resolve_source(cfg)
        teacher = build("teacher", OmegaConf.merge(cfg.teacher, {"source": source}))
        datamodule = build("data", cfg.data)
        teacher.set_input_normalization(datamodule)
        teacher.eval().requires_grad_(False)
        num_timesteps = teacher.num_timesteps
        curve = probe_curve(cfg, teacher, datamodule)
        distill = [distill_run(cfg, source, int(t), out) for t in cfg.distill.grid]
    policies = [where_policy_ended(curve, p) for p in policy_histograms(list(cfg.policy_runs))]
    best_probe = min(curve, key=lambda r: r["ce"])["t"]
    metric = cfg.distill.select_by
    scored = [d for d in distill if metric in d]
    best_t = max(scored, key=lambda d: d[metric])["t"] if scored else best_probe
    title = f"timestep oracle: teacher {teacher_name(source)}"
    figure = oracle_figure(curve, distill, policies, num_timesteps, title, knn_key=metric)
    try:
        with atomic_path(out / "plots" / "timestep_oracle.png") as temp:
            figure.savefig(temp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)
    for p in policies:
        flag = "low" if p["ends_low"] else "NOT low"
        print(
            f"policy {p['run']}: expected probe CE {p['expected_ce']:.3f} vs best {p['best_ce']:.3f} "
            f"(x{p['ratio']:.2f}, {flag}); mean t {p['mean_t']:.0f}"
        )
    return {
        "teacher": source,
        "num_timesteps": num_timesteps,
        "curve": curve,
        "distill": distill,
        "policies": policies,
        "best_t_probe": best_probe,
        "best_t": best_t,
        "best_t_by": metric if scored else "probe ce",
        "policies_ending_low": f"{sum(p['ends_low'] for p in policies)}/{len(policies)}",
        "plot": str(out / "plots" / "timestep_oracle.png"),
    }


@hydra.main(version_base="1.3", config_path=CONFIG_SOURCE, config_name="repfusion/oracle")
def main(cfg: DictConfig) -> None:
    result = run_stage("repfusion_oracle", cfg, run)
    print(f"best fixed t = {result['best_t']} ({result['best_t_by']}); {result['plot']}")


def command() -> None:
    """`kt-repfusion-oracle` (or `python -m repfusion.oracle`): the command line and config are checked first;
    no traceback for a user mistake."""
    from tasks.run.launch import hydra_command

    hydra_command(main, "repfusion/oracle")


if __name__ == "__main__":
    command()
