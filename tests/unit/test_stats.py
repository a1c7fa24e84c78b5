"""qastream.telemetry.stats: the one nearest-rank percentile, including where the old copies disagreed.

Before this module there were four: ``distribution.nearest_rank`` and
``commands.load.percentiles`` took ``ceil(p * n / 100)``; bench/common.py took
``round(p / 100 * n + 0.5)``, which rounds half to even, so when ``p * n / 100``
was an odd whole number it answered one rank too high (the p99 of 1..100 was
100, not 99); and calibration interpolated.  The SQL percentiles of
qastream/db compute the same rank as :func:`nearest_rank_index`.
"""

import pytest

from qastream.telemetry.stats import interpolated_quantile, median, nearest_rank_index, percentile

ONE_TO_100 = [float(i) for i in range(1, 101)]


@pytest.mark.parametrize("values, p, expected", [
    ([], 50, None),
    ([7.0], 0, 7.0),
    ([7.0], 99, 7.0),
    ([2.0, 1.0], 50, 1.0),           # unsorted input is sorted
    ([1.0, 2.0], 95, 2.0),
    ([1.0, 2.0, 3.0], 0, 1.0),       # p = 0 is the minimum, not an index of -1
    ([1.0, 2.0, 3.0], 100, 3.0),
    ([1.0, 2.0, 3.0, 4.0], 50, 2.0),  # a real value, not the interpolated 2.5
    (ONE_TO_100, 50, 50.0),
    (ONE_TO_100, 95, 95.0),
    (ONE_TO_100, 99, 99.0),          # bench/common.py said 100.0
    ([float(i) for i in range(1, 21)], 15, 3.0),  # 15 * 20 / 100 = 3, odd: bench/common.py said 4.0
    ([float(i) for i in range(1, 11)], 90, 9.0),  # 9, odd: bench/common.py said 10.0
    ([float(i) for i in range(1, 11)], 80, 8.0),  # 8, even: all the old ones agreed
    ([float(i) for i in range(1, 1501)], 2.2, 33.0),  # float noise would give the 34th value
])
def test_percentile_is_nearest_rank(values, p, expected):
    assert percentile(values, p) == expected


@pytest.mark.parametrize("count, p, index", [
    (1, 50, 0), (2, 50, 0), (3, 50, 1), (4, 50, 1), (100, 99, 98), (100, 100, 99), (7, 0, 0), (7, 1, 0),
])
def test_nearest_rank_index_is_the_offset_the_sql_percentiles_use(count, p, index):
    assert nearest_rank_index(count, p) == index
    assert index == max(0, min(count - 1, -(-p * count // 100) - 1))  # the integer form of db/queries.py


@pytest.mark.parametrize("values, expected", [
    ([], None), ([3.0], 3.0), ([3.0, 1.0, 2.0], 2.0), ([1.0, 2.0, 3.0, 4.0], 2.0),
])
def test_median_is_the_lower_middle_value(values, expected):
    assert median(values) == expected


@pytest.mark.parametrize("values, q, expected", [
    ([], 0.5, None), ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5), ([1.0, 2.0, 3.0, 4.0], 0.0, 1.0),
    ([1.0, 2.0, 3.0, 4.0], 1.0, 4.0), ([0.0, 10.0], 0.25, 2.5),
])
def test_interpolated_quantile_is_numpys_default(values, q, expected):
    assert interpolated_quantile(values, q) == expected
