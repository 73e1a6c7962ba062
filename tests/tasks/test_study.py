"""The study harness on hand-made summaries whose answers are computed by hand:
Student-t CIs, paired differences over matching seeds, verdicts, n = 1 rows, outputs."""

from __future__ import annotations

import json
import math

import pytest

from tasks.studies.report import main as report_main
from tasks.studies.study import Estimate, Row, compare, markdown, rows_from_summaries, write_study

T_975_DF2 = 4.302652729911275  # Student-t 97.5 % quantile, 2 degrees of freedom (tables)


def summaries(values: dict[int, float], metric: str = "test/acc") -> list[dict]:
    return [{"seed": seed, "test": {metric: v}, "run_dir": f"run{seed}"} for seed, v in values.items()]


def test_estimate_mean_std_and_student_t_interval():
    est = Estimate.of([0.90, 0.92, 0.94])
    assert est.n == 3 and est.mean == pytest.approx(0.92, abs=1e-12)
    assert est.std == pytest.approx(0.02, abs=1e-12)
    half = T_975_DF2 * 0.02 / math.sqrt(3)  # 0.0496827...
    assert est.ci == pytest.approx((0.92 - half, 0.92 + half), abs=1e-9)
    assert est.ci[0] == pytest.approx(0.870317, abs=1e-6)


def test_a_single_run_has_no_spread():
    est = Estimate.of([0.97])
    assert (est.n, est.mean, est.std, est.ci) == (1, 0.97, None, None)
    table = markdown([Row("alone", {1: 0.97})], "test/acc")
    assert "| alone | 1 | 0.9700 ± – | – |" in table and "0.0000" not in table


def test_paired_difference_within_noise_and_beyond_it():
    rows = [
        Row("scratch", {1: 0.88, 2: 0.91, 3: 0.90}),
        Row("noisy", {1: 0.90, 2: 0.92, 3: 0.94}),
        Row("clear", {1: 0.93, 2: 0.97, 3: 0.955}),
    ]
    compare(rows, "scratch")
    base, noisy, clear = rows
    assert base.verdict == "baseline" and base.paired is None
    assert noisy.diffs == pytest.approx({1: 0.02, 2: 0.01, 3: 0.04})
    std = math.sqrt(((0.02 - 0.07 / 3) ** 2 + (0.01 - 0.07 / 3) ** 2 + (0.04 - 0.07 / 3) ** 2) / 2)  # 0.0152753
    half = T_975_DF2 * std / math.sqrt(3)
    assert noisy.paired.mean == pytest.approx(0.07 / 3, abs=1e-9)
    assert noisy.paired.ci == pytest.approx((0.07 / 3 - half, 0.07 / 3 + half), abs=1e-9)
    assert noisy.paired.ci[0] < 0 < noisy.paired.ci[1] and noisy.verdict == "within noise"
    # diffs 0.05, 0.06, 0.055: std 0.005, half-width 0.0124 -> CI [0.0426, 0.0674] excludes 0
    assert clear.paired.ci[0] == pytest.approx(0.055 - T_975_DF2 * 0.005 / math.sqrt(3), abs=1e-9)
    assert clear.verdict == "better than baseline"


def test_pairing_uses_only_matching_seeds_and_says_when_there_are_none():
    rows = [
        Row("base", {1: 0.5, 2: 0.6, 3: 0.7}),
        Row("partial", {2: 0.65, 3: 0.72, 9: 0.1}),
        Row("one", {3: 0.8}),
        Row("other seeds", {7: 0.9, 8: 0.9}),
    ]
    compare(rows, "base")
    assert rows[1].diffs == pytest.approx({2: 0.05, 3: 0.02}) and rows[1].paired.n == 2
    assert rows[2].verdict == "one paired seed: no CI" and rows[2].paired.n == 1
    assert rows[3].verdict == "no matching seeds" and rows[3].paired is None


def test_lower_is_better_flips_the_verdict():
    rows = [Row("base", {1: 0.20, 2: 0.21, 3: 0.22}), Row("lower", {1: 0.10, 2: 0.11, 3: 0.125})]
    compare(rows, "base", higher_is_better=False)
    assert rows[1].verdict == "better than baseline"
    compare(rows, "base", higher_is_better=True)
    assert rows[1].verdict == "worse than baseline"


def test_unknown_baseline_and_duplicate_seeds_are_refused():
    with pytest.raises(ValueError, match="baseline row 'nope'"):
        compare([Row("a", {1: 1.0})], "nope")
    twice = [{"seed": 1, "test": {"m": 1.0}}, {"seed": 1, "test": {"m": 2.0}}]
    with pytest.raises(ValueError, match="two runs with seed 1"):
        rows_from_summaries({"a": twice}, "m")


def test_write_study_outputs_markdown_json_with_every_seed_and_a_plot(tmp_path):
    groups = {
        "scratch": summaries({1: 0.88, 2: 0.91, 3: 0.90}),
        "method": summaries({1: 0.90, 2: 0.92, 3: 0.94}),
        "missing": [],
    }
    rows = rows_from_summaries(groups, "test/acc")
    table = write_study(tmp_path, rows, "test/acc", baseline="scratch", title="t")
    assert (
        "| method | 3 | 0.9200 ± 0.0200 | [0.8703, 0.9697] | +0.0233 (n = 3) | [-0.0146, +0.0613] | within noise |"
        in table
    )
    assert "| missing | 0 | – | – | – | – | not run |" in table
    data = json.loads((tmp_path / "report.json").read_text())
    method = data["rows"][1]
    assert method["values"] == {"1": 0.90, "2": 0.92, "3": 0.94}
    assert method["paired"]["diffs"] == pytest.approx({"1": 0.02, "2": 0.01, "3": 0.04})
    assert method["estimate"]["ci95"] == pytest.approx([0.870317, 0.969683], abs=1e-6)
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_kt_report_groups_runs_and_compares_with_the_baseline(tmp_path, capsys):
    for label, values in {
        "classify_digits": {1: 0.9, 2: 0.92},
        "classify_digits model.x=1": {1: 0.95, 2: 0.96},
    }.items():
        for seed, value in values.items():
            run = tmp_path / f"{label.replace(' ', '_')}_{seed}"
            run.mkdir()
            overrides = [f"seed={seed}"] + label.split(" ")[1:]
            (run / "summary.json").write_text(
                json.dumps(
                    {"experiment": "classify_digits", "overrides": overrides, "seed": seed, "test": {"test/acc": value}}
                )
            )
    report_main([str(tmp_path), "--metric", "test/acc", "--baseline", "classify_digits"])
    out = capsys.readouterr().out
    assert "| classify_digits model.x=1 | 2 | 0.9550 ± 0.0071 |" in out and "+0.0450 (n = 2)" in out
    # two paired diffs 0.05 and 0.04: t(0.975, 1) = 12.706 -> CI [-0.0185, +0.1085]: within noise
    assert "[-0.0185, +0.1085] | within noise |" in out


def test_kt_report_names_a_metric_no_run_has(tmp_path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps({"experiment": "e", "seed": 1, "test": {"test/acc": 0.5}}))
    with pytest.raises(SystemExit) as exit_:
        report_main([str(tmp_path), "--metric", "test/miou"])
    assert exit_.value.code == 2
    assert "no run has the metric(s) ['test/miou']. Metrics these runs have: ['test/acc']" in capsys.readouterr().err


def test_a_chain_without_compare_reports_every_stage(tmp_path):
    from omegaconf import OmegaConf

    from tasks.studies.chain import comparison_tables, plan

    chain = OmegaConf.create({"stages": {"a": {"experiment": "x"}, "b": {"experiment": "x", "seeds": [1, 2]}}})
    tables = comparison_tables(chain, plan(chain, tmp_path, [], {}, None))
    assert tables == [
        {"metric": "test/acc", "baseline": None, "rows": {"a": "a", "b": "b"}, "higher_is_better": True, "title": ""}
    ]
