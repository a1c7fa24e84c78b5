"""validated-responses -> database (upsert) + cache, then the completed status and its webhooks.

An answer the database refuses (a NUL on PostgreSQL, a value too long) is
dead-lettered with the database's reason: waiting for it would hold up every
question behind it in this stage, forever.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import faust

from qastream.app import app, cache, settings, storage, topics
from qastream.db.queries import StoredAnswer
from qastream.errors import ErrorClass
from qastream.models import Job, result_of
from qastream.policy.lifecycle import Stage
from qastream.policy.usage import usage_of
from qastream.policy.webhooks import EventKind
from qastream.services.storage import until_written, write_isolated
from qastream.tables.status import report
from qastream.webhooks import announce_questions

logger = logging.getLogger(__name__)

#: Longest a lone answer waits for others to share its transaction.
BATCH_WINDOW_SECONDS = 0.05


def stored_answer(job: Job, now: float) -> StoredAnswer:
    """The database row of a completed job."""
    return StoredAnswer(
        question_id=job.question_id, question_text=job.question_text, original_answer=job.original_answer,
        accepted_at=job.accepted_at or now, epoch=job.epoch, answer=job.answer or "", score=job.score,
        first_score=job.first_score, processing_attempts=job.attempt, error_retries=job.retries,
        total_processing_time_ms=max(0.0, (now - (job.accepted_at or now)) * 1000.0), llm_time_ms=job.llm_ms,
        low_quality=job.low_quality, model=job.model, at=now, usage=usage_of(job),
    )


def rejected_job(job: Job, reason: str) -> Job:
    """The dead letter of an answer the database refused to store."""
    return job.derive(error_class=ErrorClass.REJECTED, error_code=0,
                      error_message=f"the database refused to store the answer: {reason}")


async def store_batch(jobs: Sequence[Job]) -> None:
    """Write a batch in one transaction, cache it, and mark each question completed."""
    now = time.time()
    rows = {job.question_id: stored_answer(job, now) for job in jobs}  # last write of a key wins
    latest = {job.question_id: job for job in jobs}
    saved, refused = await until_written(lambda: write_isolated(storage.save_completed, list(rows.values())),
                                         f"{len(rows)} answer(s)")
    for rejection in refused:
        job = latest[rejection.item.question_id]
        logger.error("database refused the answer of %s epoch %d, dead-lettering it: %s",
                     job.question_id, job.epoch, rejection.reason)
        await topics.permanent.send(key=job.question_id, value=rejected_job(job, rejection.reason))
    written = {a.question_id for a in saved}
    refused_ids = {r.item.question_id for r in refused}
    results = []
    outcomes = []
    for job in jobs:
        if job.question_id in refused_ids:
            continue
        if job.question_id not in written:
            logger.info("skipping stale answer for %s epoch %d", job.question_id, job.epoch)
            continue
        result = result_of(job, rows[job.question_id].total_processing_time_ms)
        results.append(result)
        outcomes.append((job.question_id, job.epoch, result))
        app.runtime.counts.record_completed(rows[job.question_id].total_processing_time_ms, job.score, job.low_quality)
        await report(job, Stage.COMPLETED, result=result)
    await cache.put_many(results)
    await announce_questions(EventKind.QUESTION_COMPLETED, outcomes)


@app.agent(topics.validated)
async def store(jobs: faust.StreamT[Job]) -> None:
    """Persist answers in batches of up to ``store_batch_size``."""
    async for batch in jobs.take(settings.store_batch_size, within=BATCH_WINDOW_SECONDS):
        await store_batch(batch)
