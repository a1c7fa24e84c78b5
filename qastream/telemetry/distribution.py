"""A bounded distribution of observed values: percentiles of the recent ones, buckets of all of them.

Workers observe values for as long as they run (LLM call latency, question
latency, scores), so keeping every sample is not an option.  A
:class:`Distribution` keeps the last ``window`` samples for percentiles
(what the JSON ``/metrics`` shows: the recent behaviour, not an average since
start) and cumulative counts per fixed bucket plus a running sum (what a
Prometheus histogram needs: monotonic counters that can be aggregated across
workers).  Memory is bounded by ``window`` and the number of buckets.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Iterable, Optional

from qastream.telemetry.stats import percentile

#: Bucket upper bounds for latencies in milliseconds: LLM calls range from
#: milliseconds (echo backend) to minutes (a loaded model on a CPU).
LATENCY_BUCKETS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
                      60000.0, 120000.0, 300000.0)


class Distribution:
    """Recent samples for percentiles, all samples in cumulative buckets."""

    def __init__(self, buckets: Iterable[float] = LATENCY_BUCKETS_MS, window: int = 2048) -> None:
        self.bounds = tuple(sorted(buckets))
        if not self.bounds:
            raise ValueError("a distribution needs at least one bucket bound")
        self.recent: deque[float] = deque(maxlen=window)
        self.counts = [0] * (len(self.bounds) + 1)  # the last bucket is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Record one value."""
        self.recent.append(value)
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def percentiles(self, digits: int = 1) -> dict[str, Optional[float]]:
        """p50/p95/p99/max of the recent window, and the counts: the JSON form."""
        ordered = sorted(self.recent)

        def rounded(value: Optional[float]) -> Optional[float]:
            return None if value is None else round(value, digits)

        return {
            "p50": rounded(percentile(ordered, 50)), "p95": rounded(percentile(ordered, 95)),
            "p99": rounded(percentile(ordered, 99)), "max": rounded(ordered[-1] if ordered else None),
            "count": self.count, "window": len(ordered),
        }

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with ``(inf, count)``: Prometheus buckets."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts):
            running += n
            out.append((bound, running))
        return out
