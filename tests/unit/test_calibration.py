"""Threshold recommendation: Youden's J on a 0.01 grid, quantiles, histograms, AUC."""

import pytest

from qastream.datasets.records import sample
from qastream.devtools import calibration
from qastream.devtools.calibration import auc, best_threshold, histogram, operating_point, recommend, summarise
from qastream.telemetry.stats import interpolated_quantile as quantile


@pytest.mark.parametrize("positives, negatives, threshold, tpr, fpr", [
    # Perfectly separated: every threshold in (0.4, 0.6] has J = 1; ties go to the higher.
    ([0.6, 0.7, 0.8], [0.2, 0.3, 0.4], 0.6, 1.0, 0.0),
    # Overlap: J = 2/3 both on (0.35, 0.45] (all positives, one negative) and on (0.5, 0.55]
    # (two positives, no negative); the tie goes to the higher threshold.
    ([0.45, 0.55, 0.65], [0.3, 0.35, 0.5], 0.55, 2 / 3, 0.0),
    # Negatives above positives: nothing separates; J = 0 at the top of the grid.
    ([0.1, 0.2], [0.8, 0.9], 1.0, 0.0, 0.0),
])
def test_best_threshold(positives, negatives, threshold, tpr, fpr):
    best = best_threshold(positives, negatives)
    assert best.threshold == pytest.approx(threshold)
    assert best.tpr == pytest.approx(tpr, abs=1e-4)
    assert best.fpr == pytest.approx(fpr, abs=1e-4)
    assert best.youden_j == pytest.approx(tpr - fpr, abs=1e-4)
    assert best.balanced_accuracy == pytest.approx((tpr + 1 - fpr) / 2, abs=1e-4)


def test_operating_point_counts_scores_equal_to_threshold_as_passing():
    point = operating_point([0.6, 0.59], [0.6], 0.6)
    assert (point.tpr, point.fpr) == (0.5, 1.0)


def test_best_threshold_needs_both_sets():
    with pytest.raises(ValueError):
        best_threshold([], [0.1])


@pytest.mark.parametrize("positives, negatives, expected", [
    ([0.9], [0.1], 1.0), ([0.1], [0.9], 0.0), ([0.5], [0.5], 0.5), ([0.2, 0.8], [0.5], 0.5),
])
def test_auc(positives, negatives, expected):
    assert auc(positives, negatives) == expected


def test_quantiles_interpolate_like_numpy():
    values = [1.0, 2.0, 3.0, 4.0]
    assert quantile(values, 0.5) == 2.5
    assert quantile(values, 0.0) == 1.0 and quantile(values, 1.0) == 4.0
    summary = summarise([0.3, 0.1, 0.2])
    assert summary.n == 3 and summary.mean == 0.2 and summary.quantiles["p50"] == 0.2
    assert summarise([]).mean is None


def test_histogram_bins_and_clamps():
    rows = histogram([0.0, 0.04, 0.05, 0.99, 1.0, 1.2, -0.1], width=0.05)
    assert len(rows) == 20
    assert rows[0] == (0.0, 3) and rows[1] == (0.05, 1) and rows[-1] == (0.95, 3)
    lines = calibration.text_histogram([0.41, 0.42, 0.57])
    assert lines[0].startswith("0.40-0.45     2") and lines[-1].startswith("0.55-0.60     1") and len(lines) == 4


def test_recommend_reports_bootstrap_range_around_the_threshold():
    positives = [0.5 + i / 100 for i in range(30)]
    negatives = [0.2 + i / 100 for i in range(30)]
    rec = recommend(positives, negatives, bootstrap_rounds=50, seed=1)
    assert rec.best.threshold == pytest.approx(0.5)
    assert rec.bootstrap_low <= rec.best.threshold <= rec.bootstrap_high
    assert rec.auc == 1.0 and "Youden" in rec.criterion


def test_sample_is_seeded_uniform_and_in_input_order():
    first = sample(range(1000), 10, seed=3)
    assert first == sample(range(1000), 10, seed=3) and first == sorted(first) and len(set(first)) == 10
    assert sample(range(5), 10, seed=3) == [0, 1, 2, 3, 4]
