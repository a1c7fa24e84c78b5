"""llm-responses-error-overload / -quota -> wait -> questions-pending, or dead letters.

Foundation version: each waiting question occupies one of many concurrent
actors, so a wait never holds other questions back until all actors are
waiting.  (The failure-path issue replaces this with parked retries.)
"""

from __future__ import annotations

import asyncio
import logging

import faust

from qastream.app import app, settings, topics
from qastream.backoff import RetryPolicy, retry_delay
from qastream.errors import OVERLOAD, QUOTA
from qastream.models import Job
from qastream.tables.status import report

logger = logging.getLogger(__name__)

#: Questions that can wait on a delay at once, per error topic and worker.
WAITING_ACTORS = 64

policy = RetryPolicy(overload_delays=settings.overload_delays(), quota_delay=settings.retry_quota_delay_seconds,
                     quota_max=settings.retry_quota_max)


def next_retry(job: Job) -> Job:
    """The job to re-enqueue after a failure of ``job.error_class``."""
    counts = {"overload_retries": job.overload_retries + (job.error_class == OVERLOAD),
              "quota_retries": job.quota_retries + (job.error_class == QUOTA)}
    return job.derive(retries=job.retries + 1, **counts)


async def retry_one(job: Job) -> None:
    """Wait out the delay the policy gives, then re-enqueue; dead-letter when it gives none."""
    delay = retry_delay(policy, job.error_class or "", job.overload_retries, job.quota_retries, job.retry_after)
    if delay is None:
        logger.warning("%s: giving up after %d %s retries", job.question_id,
                       job.overload_retries if job.error_class == OVERLOAD else job.quota_retries, job.error_class)
        gave_up = job.derive(error_message=f"gave up after retries: {job.error_message}")
        await topics.permanent.send(key=job.question_id, value=gave_up)
        return
    retry = next_retry(job)
    await report(retry, "waiting_retry", detail=f"{job.error_class} ({job.error_code}); retry in {delay:g} s")
    await asyncio.sleep(delay)
    await topics.pending.send(key=job.question_id, value=retry)


@app.agent(topics.overload, concurrency=WAITING_ACTORS)
async def retry_overload(jobs: faust.StreamT[Job]) -> None:
    """Retry transient failures with exponential back-off."""
    async for job in jobs:
        await retry_one(job)


@app.agent(topics.quota, concurrency=WAITING_ACTORS)
async def retry_quota(jobs: faust.StreamT[Job]) -> None:
    """Retry quota failures after a fixed delay or the server's Retry-After."""
    async for job in jobs:
        await retry_one(job)
