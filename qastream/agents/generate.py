"""questions-pending -> LLM -> llm-responses-success, or an error topic by class.

No LLM call starts for a cancelled question: :func:`cancelled` is checked
after the breaker's wait and right before the call (why the database is
read, and not only the status table: :mod:`qastream.web.cancel`).  That
covers retries and regenerations too, which come back through this topic.
"""

from __future__ import annotations

import asyncio
import logging

import faust

from qastream.app import app, llm, settings, storage, topics
from qastream.errors import LLM_CALL_ERRORS, signals_outage
from qastream.models import Job
from qastream.policy.ids import generation_seed
from qastream.policy.lifecycle import Stage, is_cancelled, is_stale
from qastream.policy.quality import keep_best
from qastream.tables.status import report, status_table

logger = logging.getLogger(__name__)


async def cancelled(job: Job) -> bool:
    """Whether ``job``'s question was cancelled in its epoch: the status table first, then the database.

    The table is this worker's own partition (the events topic is
    co-partitioned with pending) and spares the read once the cancel event
    is applied.  The database read is bounded; if the database does not
    answer, the question is generated (a cancel needs the database too, so
    one that could not be read now is at worst one the table has not seen).
    """
    if is_cancelled(status_table.get(job.question_id), job.epoch):
        return True
    try:
        async with asyncio.timeout(settings.db_statement_timeout_seconds):
            found = await storage.is_cancelled(job.question_id, job.epoch)
    except Exception as exc:
        logger.warning("%s: could not check for a cancellation (%r); generating", job.question_id, exc)
        return False
    if found:
        await report(job, Stage.CANCELLED)  # the cancel's own event may have been lost: bring the table in step
    return found


async def skip_cancelled(job: Job) -> None:
    """Start nothing for a cancelled question; a regeneration's best answer so far is kept, as it was paid for."""
    logger.debug("%s attempt %d: cancelled, not generated", job.question_id, job.attempt)
    if job.attempt > 1 and job.best_answer is not None:
        await topics.validated.send(key=job.question_id, value=keep_best(job))


async def generate_one(job: Job) -> None:
    """Call the LLM for one job and route the outcome."""
    if is_cancelled(status_table.get(job.question_id), job.epoch):  # before is_stale: a cancel is no redelivery
        await skip_cancelled(job)
        return
    if is_stale(status_table.get(job.question_id), job.epoch, job.attempt, job.retries, Stage.GENERATING):
        logger.info("skipping %s attempt %d: already past generation (redelivery)", job.question_id, job.attempt)
        return
    breaker = app.runtime.breaker
    if not breaker.allow():  # the LLM is down: hold the question instead of failing it
        breaker.held += 1
        while not breaker.allow():
            await asyncio.sleep(min(max(breaker.wait_time(), 0.05), 0.5))
    if await cancelled(job):
        await skip_cancelled(job)
        return
    await report(job, Stage.GENERATING)
    try:
        generation = await llm.generate(job.question_text, generation_seed(job.question_id, job.epoch, job.attempt))
    except LLM_CALL_ERRORS as err:
        if signals_outage(err.status_code):
            outage = breaker.record_failure()
        else:
            outage = False
            breaker.record_success()  # the server answered (busy, quota, 4xx): it is up
        logger.warning("LLM call for %s attempt %d failed%s: %s", job.question_id, job.attempt,
                       " (outage)" if outage else "", err)
        failed = job.derive(error_class=err.error_class, error_code=err.status_code, error_message=err.message,
                            retry_after=err.retry_after, outage=outage)
        await topics.for_error(err.error_class).send(key=job.question_id, value=failed)
        return
    breaker.record_success()
    answered = job.derive(answer=generation.text, model=generation.model, llm_ms=job.llm_ms + generation.latency_ms,
                          error_class=None, error_code=None, error_message=None, retry_after=None)
    await topics.success.send(key=job.question_id, value=answered)


@app.agent(topics.pending, concurrency=settings.llm_concurrency)
async def generate(jobs: faust.StreamT[Job]) -> None:
    """Generate answers, ``llm_concurrency`` calls at a time per worker."""
    async for job in jobs:
        try:
            await generate_one(job)
        except Exception as exc:
            # A send that raised (the broker is unreachable): raising here would
            # restart the agent and skip the message anyway.  The question keeps
            # its last status and reconciliation re-enqueues it after that
            # stage's deadline (qastream.policy.deadlines).
            logger.error("%s attempt %d: generation stage failed (%r); left to its stage deadline",
                         job.question_id, job.attempt, exc)
