"""Retry policy: how long to wait before the next LLM call, or whether to give up.

Pure data and a pure function, so every schedule is table-tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from qastream.errors import ErrorClass
from qastream.models import Job


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
    if error_class == ErrorClass.OVERLOAD:
        if overload_retries < len(policy.overload_delays):
            return policy.overload_delays[overload_retries]
        return None
    if error_class == ErrorClass.QUOTA:
        if quota_retries < policy.quota_max:
            return retry_after if retry_after is not None else policy.quota_delay
        return None
    return None


def plan_retry(policy: RetryPolicy, job: Job, now: float, outage_delay: float) -> Optional[Job]:
    """The parked job with its due time, or ``None`` when the question should be dead-lettered.

    ``retries`` counts every error retry of the epoch; the per-class counts
    are the budget, which an outage failure does not use.
    """
    if job.outage:
        return job.derive(retries=job.retries + 1, due_at=now + outage_delay, outage=False)
    delay = retry_delay(policy, job.error_class or "", job.overload_retries, job.quota_retries, job.retry_after)
    if delay is None:
        return None
    return job.derive(retries=job.retries + 1, due_at=now + delay,
                      overload_retries=job.overload_retries + (job.error_class == ErrorClass.OVERLOAD),
                      quota_retries=job.quota_retries + (job.error_class == ErrorClass.QUOTA))
