"""Rank statistics of a proxy against trained accuracy, on orderings whose values are known."""

from __future__ import annotations

import pytest

from dery.ranking import bootstrap_ci, kendall, rank_report, spearman, top1_regret, top_hit_rate

ACC = [0.90, 0.80, 0.70, 0.60, 0.50, 0.40]


def test_perfect_reversed_and_one_swap():
    assert kendall([6, 5, 4, 3, 2, 1], ACC) == pytest.approx(1.0) == spearman([6, 5, 4, 3, 2, 1], ACC)
    assert kendall([1, 2, 3, 4, 5, 6], ACC) == pytest.approx(-1.0) == spearman([1, 2, 3, 4, 5, 6], ACC)
    # one adjacent swap among 6: 14 concordant, 1 discordant pair of 15 -> tau = 13/15;
    # rank differences d = (1, -1, 0...) -> rho = 1 - 6 * 2 / (6 * 35) = 33/35
    assert kendall([5, 6, 4, 3, 2, 1], ACC) == pytest.approx(13 / 15)
    assert spearman([5, 6, 4, 3, 2, 1], ACC) == pytest.approx(33 / 35)


def test_regret_and_top_hits():
    assert top1_regret([6, 5, 4, 3, 2, 1], ACC) == 0.0
    assert top1_regret([1, 2, 3, 4, 5, 6], ACC) == pytest.approx(0.50)  # picks the worst
    assert top1_regret([1, 9, 3, 9, 5, 6], ACC) == pytest.approx(0.90 - (0.80 + 0.60) / 2)  # tied picks
    assert top_hit_rate([6, 5, 4, 3, 2, 1], ACC, k=5) == 1.0
    assert top_hit_rate([1, 2, 3, 4, 5, 6], ACC, k=2) == 0.0
    assert top_hit_rate([6, 1, 5, 2, 4, 3], ACC, k=3) == pytest.approx(2 / 3)  # picks 0, 2, 4; best 0, 1, 2


def test_bootstrap_ci_brackets_and_is_seeded():
    scores = [6, 5, 4, 3, 2, 1, 0.5, 7, 8, 2.5]
    acc = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.95, 0.2, 0.45]
    low, high = bootstrap_ci(kendall, scores, acc, resamples=300, seed=1)
    assert low < kendall(scores, acc) < high
    assert (low, high) == bootstrap_ci(kendall, scores, acc, resamples=300, seed=1)
    assert bootstrap_ci(kendall, [6, 5, 4, 3, 2, 1], ACC, resamples=200) == pytest.approx((1.0, 1.0))  # all concordant


def test_rank_report_and_bad_input():
    report = rank_report([6, 5, 4, 3, 2, 1], ACC)
    assert (
        report["kendall_tau"] == pytest.approx(1.0) and report["top1_regret"] == 0.0 and report["top5_hit_rate"] == 1.0
    )
    assert report["n"] == 6
    with pytest.raises(ValueError, match="two vectors of one length"):
        kendall([1, 2], ACC)
