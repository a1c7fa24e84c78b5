"""When a load generator sends each request: uniform, Poisson or burst arrivals at a mean rate.

Pure and seeded, so a load is repeatable and the schedules are table-tested.
Offsets are seconds from the start of the run.

* ``uniform`` -- one request every ``1 / rate`` seconds: the steady load of a
  batch job.
* ``poisson`` -- exponential gaps with mean ``1 / rate``: independent users,
  the usual model of open traffic; bursts and lulls happen by chance.
* ``burst`` -- ``burst_size`` requests at once, every ``burst_size / rate``
  seconds: the same mean rate with the worst short-term peaks.

A rate of 0 means no pacing: every offset is 0 and only the client's
concurrency limits the load.
"""

from __future__ import annotations

import random
from typing import Iterator, Optional

ARRIVALS = ("uniform", "poisson", "burst")


def arrival_offsets(rate: float, arrival: str = "uniform", *, burst_size: int = 10,
                    seed: Optional[int] = None) -> Iterator[float]:
    """An endless schedule of send offsets in seconds (take as many as there are requests)."""
    if arrival not in ARRIVALS:
        raise ValueError(f"unknown arrival {arrival!r} (one of {', '.join(ARRIVALS)})")
    if rate < 0:
        raise ValueError("rate must not be negative")
    if burst_size < 1:
        raise ValueError("burst size must be at least 1")
    if rate == 0:
        while True:
            yield 0.0
    rng = random.Random(seed)
    i = 0
    at = 0.0
    while True:
        if arrival == "uniform":
            yield i / rate
        elif arrival == "burst":
            yield (i // burst_size) * burst_size / rate
        else:
            yield at
            at += rng.expovariate(rate)
        i += 1
