"""llm-responses-error-overload / -quota -> parked -> the question's lane (questions-pending or bulk), or dead letters.

A failed question is parked with its due time (see qastream.tables.parking)
and the agent moves on at once, so a 30 s quota delay never holds back any
other question.  The release timer sends due entries back to the topic; the
agent then unparks them and re-enqueues them.  Failures that happened during
an LLM outage (the server's circuit breaker was open) wait until some server
may take a call again (at least one cool-down) and do not use up the
question's retry budget; the retry goes to another server when one is healthy.
"""

from __future__ import annotations

import logging
import time
from typing import cast

import faust
from faust.types import TableT

from qastream.app import app, llm, settings, topics
from qastream.errors import ErrorClass
from qastream.models import Job
from qastream.policy.backoff import RetryPolicy, plan_retry
from qastream.policy.lifecycle import Stage
from qastream.tables.parking import Parked, overload_parking, quota_parking
from qastream.tables.status import report

logger = logging.getLogger(__name__)

policy = RetryPolicy(overload_delays=settings.overload_delays(), quota_delay=settings.retry_quota_delay_seconds,
                     quota_max=settings.retry_quota_max)


def same_retry(parked: dict, release: Job) -> bool:
    """True when a release message is for the entry that is parked now."""
    return (parked["epoch"], parked["attempt"], parked["retries"]) == (release.epoch, release.attempt, release.retries)


async def handle(event: faust.EventT, parking: TableT) -> None:
    """Park a fresh failure, or unpark and re-enqueue a released one."""
    job = cast(Job, event.value)
    qid = job.question_id
    if job.due_at is not None:  # a release sent by the timer
        entry = parking.get(qid)
        if entry is None or not same_retry(entry["job"], job):
            logger.debug("dropping duplicate release of %s", qid)
            return
        del parking[qid]
        await topics.intake(job.lane).send(key=qid, value=job.derive(due_at=None))
        return
    parked = plan_retry(policy, job, time.time(), max(llm.wait_time(), settings.breaker_cooldown_seconds))
    if parked is None:
        budget = job.overload_retries if job.error_class == ErrorClass.OVERLOAD else job.quota_retries
        logger.warning("%s: dead-lettering after %d %s retries: %s", qid, budget, job.error_class, job.error_message)
        app.runtime.counts.record_exhausted(job.error_class or "unknown")
        await topics.permanent.send(key=qid, value=job.derive(
            error_message=f"gave up after {budget} {job.error_class} retries: {job.error_message}"))
        return
    parking[qid] = Parked(job=parked.asdict(), partition=event.message.partition)
    app.runtime.counts.record_retry(job.error_class or "unknown", job.outage)
    wait = (parked.due_at or 0.0) - time.time()
    await report(parked, Stage.WAITING_RETRY, detail=f"{job.error_class} ({job.error_code}); retry in {wait:.1f} s")


async def handle_guarded(event: faust.EventT, parking: TableT) -> None:
    """:func:`handle`, with a send that raises (the broker is unreachable) logged, not crashing the agent.

    The question keeps its last status; reconciliation re-enqueues it after
    the ``waiting_retry`` deadline (qastream.policy.deadlines).
    """
    try:
        await handle(event, parking)
    except Exception as exc:
        logger.error("%s: retry stage failed (%r); left to its stage deadline", cast(Job, event.value).question_id,
                     exc)


@app.agent(topics.overload)
async def retry_overload(jobs: faust.StreamT[Job]) -> None:
    """Retry transient failures with exponential back-off."""
    async for event in jobs.events():
        await handle_guarded(event, overload_parking)


@app.agent(topics.quota)
async def retry_quota(jobs: faust.StreamT[Job]) -> None:
    """Retry quota failures after a fixed delay or the server's Retry-After."""
    async for event in jobs.events():
        await handle_guarded(event, quota_parking)


def due_entries(parking: TableT, active_partitions: set[int], now: float) -> list[Job]:
    """Parked jobs that are due, in partitions this worker actively owns, not already released."""
    due = []
    for qid, entry in list(parking.items()):
        job = entry["job"]
        if entry["partition"] in active_partitions and job["due_at"] <= now \
                and app.runtime.released.get((parking.name, qid)) != job["due_at"]:
            due.append(Job(**job))
    return due


@app.timer(settings.retry_release_interval)
async def release_due_retries() -> None:
    """Send due parked retries back to their topic, where their agent re-enqueues them."""
    assignment = app.consumer.assignment()
    now = time.time()
    released = app.runtime.released
    for parking, topic in ((overload_parking, topics.overload), (quota_parking, topics.quota)):
        active = {tp.partition for tp in assignment if tp.topic == topic.get_topic_name()}
        keys = set(parking.keys())
        for key in [k for k in released if k[0] == parking.name and k[1] not in keys]:
            del released[key]  # unparked: forget the release
        for job in due_entries(parking, active, now):
            released[(parking.name, job.question_id)] = job.due_at or now
            await topic.send(key=job.question_id, value=job)
