"""The timestep oracle: the probe curve on a real (tiny) teacher, where a policy's final t
distribution sits on it, the best t handed to the fixed mode, and the picture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repfusion.oracle import best_timestep, fit_probe, where_policy_ended
from repfusion.policy import TimestepPolicy
from tasks.errors import UserError
from tests.conftest import run_cli

CURVE = [{"t": 0, "ce": 0.4}, {"t": 500, "ce": 0.2}, {"t": 1000, "ce": 0.6}]


def test_expected_cross_entropy_interpolates_the_curve_at_the_bin_centres():
    # 4 bins of 250 t, centres 125, 375, 625, 875; the curve there: 0.35, 0.25, 0.3, 0.5.
    ended = where_policy_ended(CURVE, {"run": "r", "num_timesteps": 1000, "counts": [0, 3, 1, 0]})
    assert ended["expected_ce"] == pytest.approx(0.75 * 0.25 + 0.25 * 0.3)
    assert ended["ratio"] == pytest.approx(0.2625 / 0.2) and not ended["ends_low"]
    assert ended["mean_t"] == pytest.approx(0.75 * 375 + 0.25 * 625)
    assert ended["bin_entropy"] == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    flat = [{"t": 0, "ce": 0.21}, {"t": 1000, "ce": 0.2}]
    low = where_policy_ended(flat, {"run": "r", "num_timesteps": 1000, "counts": [1, 1]})
    assert low["ends_low"] and low["ratio"] == pytest.approx((0.2075 + 0.2025) / 2 / 0.2)


def test_fit_probe_separates_informative_from_noise_features():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=g)
    informative = torch.nn.functional.one_hot(y, 8).float() + 0.3 * torch.randn(400, 8, generator=g)
    noise = torch.randn(400, 8, generator=g)
    good = fit_probe(informative[:300], y[:300], informative[300:], y[300:], 4, 30, 1e-2, 64, None, 0)
    bad = fit_probe(noise[:300], y[:300], noise[300:], y[300:], 4, 30, 1e-2, 64, None, 0)
    assert good["acc"] > 0.95 and good["ce"] < 0.2 and bad["ce"] > 1.2  # chance: ln 4 = 1.39


def test_best_t_reaches_the_fixed_mode_and_a_wrong_dir_is_named(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"stage": "repfusion_oracle", "best_t": 250}))
    assert best_timestep(tmp_path) == 250
    policy = TimestepPolicy(4, 3, mode="fixed", fixed_t_from=str(tmp_path))
    assert torch.equal(policy.draw(torch.zeros(3, 3, 8, 8)).t, torch.full((3,), 250))
    with pytest.raises(UserError, match="No finished oracle run.*python -m repfusion.oracle"):
        best_timestep(tmp_path / "nowhere")
    with pytest.raises(UserError, match="fixed_t_from.*mode fixed"):
        TimestepPolicy(4, 3, mode="rl", fixed_t_from=str(tmp_path))


def test_oracle_app_on_a_tiny_teacher(teacher_dir, tmp_path):
    """The real command on the test teacher: a 3-point probe curve with 2 fits each, no
    distillation runs, one fake rl run's histogram drawn over it."""
    rl_run = tmp_path / "rl"
    (rl_run / "export").mkdir(parents=True)
    (rl_run / "export" / "timesteps.json").write_text(
        json.dumps({"mode": "rl", "num_timesteps": 1000, "bins": 2, "per_epoch": [[5, 5], [10, 0]]})
    )
    out = tmp_path / "oracle"
    result = run_cli(
        [
            f"teacher.source={teacher_dir}",
            "grid=[0,400,999]",
            "probe.epochs=3",
            "probe.seeds=2",
            "probe.train_images=128",
            "probe.eval_images=64",
            "distill.grid=[]",
            f"policy_runs=[{rl_run}]",
            f"hydra.run.dir={out}",
        ],
        module="repfusion.oracle",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["t"] for r in summary["curve"]] == [0, 400, 999]
    assert all(r["ce_std"] is not None for r in summary["curve"])
    best = min(summary["curve"], key=lambda r: r["ce"])
    assert summary["best_t"] == best["t"] and summary["best_t_by"] == "probe ce"
    (policy,) = summary["policies"]  # the last epoch: all in [0, 500), the curve at t = 250 there
    expected = np.interp(250, [0, 400, 999], [r["ce"] for r in summary["curve"]])
    assert policy["expected_ce"] == pytest.approx(expected) and policy["share"] == [1.0, 0.0]
    assert (out / "plots" / "timestep_oracle.png").stat().st_size > 10_000
    redraw = run_cli(
        [f"reuse={out}", f"policy_runs=[{tmp_path}]", f"hydra.run.dir={tmp_path / 'redraw'}"], module="repfusion.oracle"
    )
    assert redraw.returncode == 0, redraw.stderr[-3000:]
    again = json.loads((tmp_path / "redraw" / "summary.json").read_text())
    assert again["curve"] == summary["curve"] and again["policies"] == summary["policies"]
