"""llm-responses-error-permanent -> the question is stored as failed, with the reason."""

from __future__ import annotations

import logging
import time
from typing import Sequence

import faust

from qastream import telemetry
from qastream.app import app, settings, storage, topics
from qastream.db.queries import Failure
from qastream.models import Job
from qastream.poison import POISON
from qastream.services.storage import until_written
from qastream.tables.status import report

logger = logging.getLogger(__name__)

BATCH_WINDOW_SECONDS = 0.05


def failure_of(job: Job, now: float) -> Failure:
    """The database record of a dead-lettered job."""
    reason = f"{job.error_class or 'permanent'} ({job.error_code}): {job.error_message or 'unknown error'}"
    return Failure(question_id=job.question_id, question_text=job.question_text,
                   original_answer=job.original_answer, accepted_at=job.accepted_at or now, epoch=job.epoch,
                   error_class=job.error_class or "permanent", error_message=reason, at=now)


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
    saved = await until_written(lambda: storage.save_failed(list(failures.values())), f"{len(failures)} failure(s)")
    written = {f.question_id for f in saved}
    for job in jobs:
        if job.question_id in written:
            telemetry.record_failed(failures[job.question_id].error_class)
            logger.warning("dead letter %s: %s", job.question_id, failures[job.question_id].error_message)
            await report(job, "failed", detail=failures[job.question_id].error_message)


@app.agent(topics.permanent)
async def dead_letters(jobs: faust.StreamT[Job]) -> None:
    """Record permanent failures; the topic keeps them for replay."""
    async for batch in jobs.take(settings.store_batch_size, within=BATCH_WINDOW_SECONDS):
        await fail_batch(batch)
