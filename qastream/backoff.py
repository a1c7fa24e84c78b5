"""Retry policy: how long to wait before the next LLM call, or whether to give up.

Pure data and a pure function, so every schedule is table-tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from qastream.errors import OVERLOAD, QUOTA


@dataclass(frozen=True)
class RetryPolicy:
    """Delays per error class (seconds)."""

    overload_delays: tuple[float, ...] = (2.0, 4.0, 8.0)
    quota_delay: float = 30.0
    quota_max: int = 5


def retry_delay(policy: RetryPolicy, error_class: str, overload_retries: int, quota_retries: int,
                retry_after: Optional[float] = None) -> Optional[float]:
    """Seconds to wait before retrying, or ``None`` to dead-letter.

    ``overload_retries``/``quota_retries`` count the retries already made for
    the current attempt.  Overload waits follow the exponential schedule; a
    quota wait honours the server's ``Retry-After`` when it sent one.
    """
    if error_class == OVERLOAD:
        if overload_retries < len(policy.overload_delays):
            return policy.overload_delays[overload_retries]
        return None
    if error_class == QUOTA:
        if quota_retries < policy.quota_max:
            return retry_after if retry_after is not None else policy.quota_delay
        return None
    return None
