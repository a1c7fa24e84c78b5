"""The one percentile definition of the package, the benchmarks and the database reports.

Nearest rank: the ``p``-th percentile of ``n`` sorted values is the value at
rank ``ceil(p * n / 100)`` (1-based), clamped to the first and last value.
It is always an observed value, so a latency percentile is a latency some
request really had, and it is what SQL computes with ``ORDER BY ... LIMIT 1
OFFSET rank - 1`` (qastream/db/report.py), so ``qastream report``, ``qastream
load`` and the benchmarks agree on the same data.  ``/metrics`` walks its
processing-time histogram to the same rank (qastream/db/stats.py): the bucket
holding the value, not the value itself.

:func:`interpolated_quantile` is the exception, kept for calibration only:
docs/calibration.json and docs/quality.md publish quantiles computed that way
(numpy's default) and a unit test recomputes them from the saved scores.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence


def nearest_rank_index(count: int, p: float) -> int:
    """The 0-based index of the ``p``-th percentile (0-100) among ``count`` sorted values.

    ``p * count`` is rounded to 9 places before the ceiling so that float noise
    (``2.2 * 1500 / 100 == 33.00000000000001``) cannot push the rank up by one.
    """
    return max(0, min(count - 1, math.ceil(round(p * count / 100, 9)) - 1))


def percentile(values: Iterable[float], p: float) -> Optional[float]:
    """The ``p``-th percentile (0-100) of ``values`` by nearest rank; ``None`` for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[nearest_rank_index(len(ordered), p)]


def median(values: Iterable[float]) -> Optional[float]:
    """The nearest-rank 50th percentile: the lower middle value when the count is even."""
    return percentile(values, 50)


def interpolated_quantile(sorted_values: Sequence[float], q: float) -> Optional[float]:
    """Linear-interpolated quantile (``q`` in 0-1) of sorted values, numpy's default method."""
    if not sorted_values:
        return None
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
