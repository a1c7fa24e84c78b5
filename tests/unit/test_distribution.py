"""qastream.telemetry.distribution: bounded percentiles and Prometheus buckets."""

import math

import pytest

from qastream.telemetry.distribution import Distribution
from qastream.telemetry.stats import percentile


@pytest.mark.parametrize("values, p, expected", [
    ([], 50, None),
    ([7.0], 99, 7.0),
    ([1.0, 2.0], 50, 1.0),
    ([1.0, 2.0], 95, 2.0),
    ([float(i) for i in range(1, 101)], 50, 50.0),
    ([float(i) for i in range(1, 101)], 95, 95.0),
    ([float(i) for i in range(1, 101)], 99, 99.0),
])
def test_nearest_rank_matches_the_database_percentiles(values, p, expected):
    assert percentile(values, p) == expected


def test_percentiles_cover_the_recent_window_and_counts_cover_everything():
    dist = Distribution(buckets=(10, 100), window=3)
    for value in (1000.0, 5.0, 50.0, 60.0):
        dist.observe(value)
    assert dist.percentiles() == {"p50": 50.0, "p95": 60.0, "p99": 60.0, "max": 60.0, "count": 4, "window": 3}
    assert dist.sum == 1115.0


def test_empty_distribution_has_no_percentiles():
    assert Distribution().percentiles() == {"p50": None, "p95": None, "p99": None, "max": None, "count": 0,
                                            "window": 0}


def test_buckets_are_cumulative_with_upper_bounds_inclusive():
    dist = Distribution(buckets=(100, 10))  # order of the bounds does not matter
    for value in (10.0, 10.5, 100.0, 101.0):
        dist.observe(value)
    assert dist.cumulative() == [(10, 1), (100, 3), (math.inf, 4)]


def test_a_distribution_needs_a_bucket():
    with pytest.raises(ValueError):
        Distribution(buckets=())
