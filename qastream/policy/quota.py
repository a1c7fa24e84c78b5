"""Per-API-key request quotas as a token bucket: pure state and one decision.

A key may make ``burst`` requests at once and then ``rate`` requests a
second: its bucket holds at most ``burst`` tokens, refills at ``rate``
tokens a second, and each request takes one.  Over any window of ``t``
seconds a key therefore gets at most ``rate * t + burst`` requests (``burst``
0 counts as 1, see :func:`capacity`), which is what the integration tests
hold the shared Redis bucket to.

The state is two numbers (tokens, the time they were counted) so the same
decision can run in-process (:mod:`qastream.services.limiter`) and in a Redis
Lua script whose arithmetic mirrors :func:`take` line by line.  A bucket
that is full is the same as no bucket at all (``None``): that is what lets
the in-process limiter evict idle keys and Redis expire them without
changing any decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional


@dataclass(frozen=True, slots=True)  # slots: a worker may hold one per busy key (services.limiter)
class Bucket:
    """A key's tokens as counted at time ``at`` (seconds on the caller's clock)."""

    tokens: float
    at: float


class Decision(NamedTuple):
    """What :func:`take` decided; unpacks as ``allowed, bucket, retry_after``."""

    allowed: bool
    #: The state to keep; ``None`` when there is nothing to remember (an unlimited key).
    bucket: Optional[Bucket]
    #: Seconds until a token is available, to the clock's resolution (the caller rounds up); 0 when allowed.
    retry_after: float


def capacity(burst: int) -> float:
    """Tokens a bucket holds when full: ``burst``, but at least one.

    ``burst`` 0 means what it means to nginx: nothing beyond the rate, one
    request at a time.  A bucket that cannot hold a whole token would refuse
    every request of a key whose rate says it may make some.
    """
    return float(max(burst, 1))


def unlimited(rate: Optional[float]) -> bool:
    """True for a key without a rate limit (``None`` or an infinite rate)."""
    if rate is None or rate == math.inf:
        return True
    if not rate > 0:  # also catches NaN
        # Zero would be a ban, not a rate: a key that may make no requests should be disabled where
        # keys are managed, not refused here forever with a Retry-After no client can honour.
        raise ValueError(f"rate must be a positive number of requests per second or None, got {rate!r}")
    return False


def take(bucket: Optional[Bucket], rate: Optional[float], burst: int, now: float) -> Decision:
    """Take one token from ``bucket`` at time ``now``, if it has one.

    ``bucket`` is ``None`` for a key not seen (or evicted because full).  A
    clock that goes backwards refills nothing and keeps the later time, so
    the seconds already credited are not credited twice when it catches up.
    """
    if rate is None or unlimited(rate):
        return Decision(True, None, 0.0)
    full = capacity(burst)
    if bucket is None:
        tokens, at = full, now
    else:
        tokens, at = bucket.tokens, bucket.at
        if now > at:
            tokens, at = min(full, tokens + (now - at) * rate), now
    if tokens >= 1:
        return Decision(True, Bucket(tokens - 1, at), 0.0)
    return Decision(False, Bucket(tokens, at), (at - now) + (1 - tokens) / rate)


def full_at(bucket: Bucket, rate: float, burst: int) -> float:
    """When ``bucket`` is full again and may be forgotten (on its own clock)."""
    return bucket.at + max(0.0, capacity(burst) - bucket.tokens) / rate
