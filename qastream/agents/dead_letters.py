"""llm-responses-error-permanent -> the question is stored as failed, with the reason, and its webhook scheduled.

A dead letter whose row the database refuses (a question that reached a topic
without passing ``POST /query``, carrying a NUL or a lone surrogate) is stored
with those characters escaped: it must still end failed, and it cannot be sent
on to another dead-letter stage.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Sequence

import faust

from qastream.app import app, settings, storage, topics
from qastream.db.queries import Failure
from qastream.errors import ErrorClass
from qastream.models import Job
from qastream.policy.lifecycle import Stage
from qastream.policy.webhooks import EventKind, failure_data
from qastream.services.storage import storable, until_written, write_isolated
from qastream.streaming.poison import POISON
from qastream.tables.status import report
from qastream.webhooks import announce_questions

logger = logging.getLogger(__name__)

BATCH_WINDOW_SECONDS = 0.05


def failure_of(job: Job, now: float) -> Failure:
    """The database record of a dead-lettered job."""
    reason = f"{job.error_class or 'permanent'} ({job.error_code}): {job.error_message or 'unknown error'}"
    return Failure(question_id=job.question_id, question_text=job.question_text,
                   original_answer=job.original_answer, accepted_at=job.accepted_at or now, epoch=job.epoch,
                   error_class=job.error_class or ErrorClass.PERMANENT, error_message=reason, at=now)


def storable_failure(failure: Failure, reason: str) -> Failure:
    """``failure`` with its texts escaped so the database takes it, and why that was needed."""
    return replace(failure, question_text=storable(failure.question_text),
                   original_answer=storable(failure.original_answer) if failure.original_answer else None,
                   error_message=storable(failure.error_message) + f" [stored escaped: {reason}]")


async def save_failures(failures: Sequence[Failure]) -> list[Failure]:
    """Store failures; a refused one again with its texts escaped, and only logged if even that fails."""
    saved, refused = await until_written(lambda: write_isolated(storage.save_failed, failures),
                                         f"{len(failures)} failure(s)")
    if not refused:
        return saved
    for rejection in refused:
        logger.error("database refused the failure of %s, storing it escaped: %s",
                     rejection.item.question_id, rejection.reason)
    escaped = [storable_failure(r.item, r.reason) for r in refused]
    saved_escaped, refused_again = await until_written(lambda: write_isolated(storage.save_failed, escaped),
                                                       f"{len(escaped)} escaped failure(s)")
    for rejection in refused_again:
        logger.error("database refused the escaped failure of %s too; it stays failed in the status table only: %s",
                     rejection.item.question_id, rejection.reason)
    return saved + saved_escaped + [r.item for r in refused_again]


async def fail_batch(jobs: Sequence[Job]) -> None:
    """Record dead letters and mark their questions failed."""
    now = time.time()
    for job in jobs:
        if job.error_class == POISON:
            logger.error("dead letter (poison, no question to fail): %s", job.error_message)
    jobs = [job for job in jobs if job.error_class != POISON]
    failures = {job.question_id: failure_of(job, now) for job in jobs}
    if not failures:
        return
    saved = await save_failures(list(failures.values()))
    written = {f.question_id for f in saved}
    outcomes = []
    for job in jobs:
        if job.question_id in written:
            failure = failures[job.question_id]
            app.runtime.counts.record_failed(failure.error_class)
            logger.warning("dead letter %s: %s", job.question_id, failure.error_message)
            await report(job, Stage.FAILED, detail=failure.error_message)
            outcomes.append((job.question_id, job.epoch, failure_data(
                job.question_id, job.question_text, failure.error_class, failure.error_message)))
    await announce_questions(EventKind.QUESTION_FAILED, outcomes)


@app.agent(topics.permanent)
async def dead_letters(jobs: faust.StreamT[Job]) -> None:
    """Record permanent failures; the topic keeps them for replay."""
    async for batch in jobs.take(settings.store_batch_size, within=BATCH_WINDOW_SECONDS):
        await fail_batch(batch)
