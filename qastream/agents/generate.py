"""questions-pending and the bulk topic -> LLM -> llm-responses-success, or an error topic by class.

One agent per lane (:mod:`qastream.policy.lanes`), each with ``llm_concurrency``
actors per LLM server, and one body for both (:func:`generate_one`): the redelivery check,
the wait while every LLM server is down, the routing of failures and the
logging are the same for every question.  The lanes differ only in the slot
they wait for: both take it from the worker's
:class:`~qastream.policy.priority.PriorityGate` (``app.runtime.llm_slots``,
``llm_concurrency`` per LLM server in all), which serves a waiting
interactive question before any bulk one.  Which server takes the call is
the pool's choice (:mod:`qastream.services.llm_pool`); which model writes it,
:func:`~qastream.policy.servers.model_for`'s.

No LLM call starts for a cancelled question: :func:`cancelled` is checked
once the slot is granted, right before the call (why the database is read,
and not only the status table: :mod:`qastream.web.cancel`).  That covers
retries and regenerations too, which come back through these topics, and a
bulk question cancelled while it waited for a slot.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

import faust

from qastream.app import app, llm, settings, storage, topics
from qastream.errors import LLM_CALL_ERRORS
from qastream.models import Job
from qastream.policy.ids import generation_seed
from qastream.policy.lanes import Lane
from qastream.policy.lifecycle import Stage, is_cancelled, is_stale
from qastream.policy.quality import keep_best
from qastream.policy.servers import model_for
from qastream.policy.usage import after_generation
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


async def wait_for_server() -> Optional[int]:
    """Hold the question while every LLM server is down (no breaker closed) instead of failing it.

    One server down is no reason to wait: the pool sends the call to another.
    Returns ``None`` when a server is up, or the server whose probe this
    question carries (its call must go out, or the probe be released).
    """
    counted = False
    while not llm.up():
        probe = llm.take_probe()
        if probe is not None:
            return probe
        if not counted:
            app.runtime.llm_held += 1
            counted = True
        await asyncio.sleep(min(max(llm.wait_time(), 0.05), 0.5))
    return None


async def generate_one(job: Job, lane: Lane) -> None:
    """Call the LLM for one job of ``lane`` and route the outcome."""
    if job.lane != lane:  # written to the lane's topic by a producer that did not set it
        job = job.derive(lane=lane)
    if is_cancelled(status_table.get(job.question_id), job.epoch):  # before is_stale: a cancel is no redelivery
        await skip_cancelled(job)
        return
    if is_stale(status_table.get(job.question_id), job.epoch, job.attempt, job.retries, Stage.GENERATING):
        logger.info("skipping %s attempt %d: already past generation (redelivery)", job.question_id, job.attempt)
        return
    # The status table trails the events topic, so a copy delivered while the first is at the LLM
    # (Faust re-reads from the committed offset after a rebalance) looks new there: this worker knows.
    claim = (job.question_id, job.epoch, job.attempt, job.retries)
    if claim in app.runtime.generating:
        logger.info("skipping %s attempt %d: this worker is generating it already (redelivery)",
                    job.question_id, job.attempt)
        return
    app.runtime.generating.add(claim)
    try:
        await call_llm(job, lane)
    finally:
        app.runtime.generating.discard(claim)


async def call_llm(job: Job, lane: Lane) -> None:
    """The LLM call of a job this worker claimed, and the routing of its outcome."""
    # A server first, then the slot.  With a server up, which one takes the call is chosen at the call, so
    # the choice sees the load of that moment.  With none up, a probe taken here must end in a call that
    # reports back, or be released.
    probe = await wait_for_server()
    async with app.runtime.llm_slots.slot(lane):
        if await cancelled(job):  # cancelled while it waited for a server or a slot
            llm.release(probe)
            await skip_cancelled(job)
            return
        try:
            await report(job, Stage.GENERATING)
        except BaseException:
            llm.release(probe)  # the probe's call will not go out
            raise
        model = model_for(job.attempt, settings.ollama_model, settings.escalation_model)
        try:
            generation = await llm.generate(job.question_text,
                                            generation_seed(job.question_id, job.epoch, job.attempt),
                                            model=model, avoid=job.last_server, probe=probe)
        except LLM_CALL_ERRORS as err:
            logger.warning("LLM call for %s attempt %d (model %s) failed on %s%s: %s", job.question_id,
                           job.attempt, model, err.server or "no server", " (outage)" if err.outage else "", err)
            failed = job.derive(error_class=err.error_class, error_code=err.status_code, error_message=err.message,
                                retry_after=err.retry_after, outage=err.outage, last_server=err.server)
            await topics.for_error(err.error_class).send(key=job.question_id, value=failed)
            return
    app.runtime.tokens.record(generation)
    answered = job.derive(answer=generation.text, model=generation.model, llm_ms=job.llm_ms + generation.latency_ms,
                          error_class=None, error_code=None, error_message=None, retry_after=None, last_server=None,
                          **after_generation(job, generation))
    await topics.success.send(key=job.question_id, value=answered)


async def generate_lane(jobs: faust.StreamT[Job], lane: Lane) -> None:
    """The loop of both generate agents."""
    # The gate keeps a freed slot for questions already delivered to the interactive stream.
    app.runtime.llm_slots.buffered = buffered
    async for job in jobs:
        try:
            await generate_one(job, lane)
        except Exception as exc:
            # A send that raised (the broker is unreachable): raising here would
            # restart the agent and skip the message anyway.  The question keeps
            # its last status and reconciliation re-enqueues it after that
            # stage's deadline (qastream.policy.deadlines).
            logger.error("%s attempt %d: generation stage failed (%r); left to its stage deadline",
                         job.question_id, job.attempt, exc)


@app.agent(topics.pending, concurrency=settings.llm_slots())
async def generate(jobs: faust.StreamT[Job]) -> None:
    """Generate answers for interactive questions, ``llm_concurrency`` calls at a time per worker and server."""
    await generate_lane(jobs, Lane.INTERACTIVE)


@app.agent(topics.bulk, concurrency=settings.llm_slots())
async def generate_bulk(jobs: faust.StreamT[Job]) -> None:
    """Generate answers for bulk questions, with the LLM slots no interactive question waits for."""
    await generate_lane(jobs, Lane.BULK)


def buffered(lane: Lane) -> int:
    """Questions of ``lane`` Faust has delivered to its agent's stream and no actor has taken yet."""
    return stream_backlog(generate if lane is Lane.INTERACTIVE else generate_bulk)


def stream_backlog(agent: Any) -> int:
    """Events in ``agent``'s stream buffer.

    The actors of one agent share one channel (Faust gives the first actor's
    channel to the others), whose queue is the stream buffer.  Faust offers no
    public accessor for it; if its internals change, this reads as nothing
    buffered (the gate then sees only the questions at the gate), never as
    an error inside the gate's release.
    """
    try:
        channels = {id(actor.stream.channel): actor.stream.channel for actor in list(agent._actors)}
        return sum(channel.queue.qsize() for channel in channels.values())
    except Exception as exc:
        logger.debug("cannot read the stream buffer of %s: %r", agent, exc)
        return 0
