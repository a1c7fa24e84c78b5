"""``POST /query``: answer from cache or database, or accept and enqueue."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from faust import web

from qastream.app import app, cache, settings, storage, topics
from qastream.db.inflight import OVER_LIMIT
from qastream.db.queries import FOUND, IN_FLIGHT, Acceptance, Submission
from qastream.errors import RequestError, RowRejected, Unavailable
from qastream.models import Job
from qastream.policy.access import Principal
from qastream.policy.admission import retry_after_header
from qastream.policy.ids import question_id
from qastream.policy.lifecycle import Stage, State
from qastream.tables.status import report, status_table
from qastream.web.access import principal_of
from qastream.web.admission import admitted, bounded
from qastream.web.requests import guarded, parse_query, parse_webhook_url, read_json

logger = logging.getLogger(__name__)

def found(source: str, result: dict[str, Any]) -> dict[str, Any]:
    """Body of a 200 answer."""
    return {"status": "found", "source": source, "result": result}


async def accept(submission: Submission) -> Acceptance:
    """Persist the submission, or 503 when the database does not answer within the statement time-out.

    A write that times out here may still commit: the question is then
    pending with no message, which reconciliation enqueues.
    """
    try:
        async with bounded("database", settings.db_statement_timeout_seconds):
            return await storage.accept(submission)
    except Unavailable:
        app.runtime.query_counts["database_timeout"] += 1
        logger.warning("accepting %s timed out after %.1f s", submission.question_id,
                       settings.db_statement_timeout_seconds)
        raise


async def enqueue(job: Job) -> None:
    """Produce an accepted question and its ``queued`` status, or 503 past ``enqueue_timeout_seconds``.

    The question is already in the database as pending, so a time-out loses
    nothing: with no status recorded, reconciliation re-enqueues it in a new
    epoch after ``reconcile_after_seconds``.  A send that timed out may still
    reach the broker later; its epoch is then behind the question's and every
    stage drops it (``is_stale``, ``save_completed``), so it is answered once.
    """
    try:
        async with asyncio.timeout(settings.enqueue_timeout_seconds):
            async with app.runtime.enqueue_slots:
                await topics.intake(job.lane).send(key=job.question_id, value=job)
                await report(job, Stage.QUEUED)
    except TimeoutError:
        app.runtime.query_counts["enqueue_timeout"] += 1
        logger.warning("enqueueing %s (epoch %d) timed out after %.1f s: left to reconciliation",
                       job.question_id, job.epoch, settings.enqueue_timeout_seconds)
        raise Unavailable("broker", "the broker did not take the question in time; it is stored and will be "
                                    "processed, retry later for its status", job.question_id) from None


async def own_answered(owner: Principal, qid: str) -> None:
    """Record that ``owner`` asked a question the cache answered, so its GET /status finds it.

    The answer is in the response already: a database that does not take the
    record in time costs the key that later lookup, not this answer.
    """
    try:
        async with bounded("database", settings.db_statement_timeout_seconds):
            await storage.own_answered(owner.key_id, qid, time.time())
    except Exception as exc:
        logger.warning("recording that key %r asked %s failed: %r", owner.name, qid, exc)


def live_status(acceptance: Acceptance) -> str:
    """The freshest status this worker knows for an in-flight question."""
    record = status_table.get(acceptance.question_id)
    return record["state"] if record else acceptance.status


@app.page("/query")
class QueryView(web.View):
    """Submit a question (``question_text``, optional ``original_answer`` and ``webhook_url``)."""

    @guarded
    @admitted
    async def post(self, request: web.Request) -> web.Response:
        payload = await read_json(request, settings.max_body_bytes, settings.body_timeout_seconds)
        query = parse_query(payload, settings.max_question_chars)
        webhook_url = parse_webhook_url(payload, secret_set=bool(settings.webhook_secret),
                                        allowed_hosts=settings.webhook_hosts())
        qid = question_id(query.question_text)
        cached = await cache.get(qid)
        owner = principal_of(request)
        if cached is not None:
            app.runtime.query_counts["cache"] += 1
            if owner is not None and not owner.sees_everything:
                await own_answered(owner, qid)
            return self.json(found("cache", cached))
        try:
            acceptance = await accept(Submission(qid, query.question_text, query.original_answer, time.time(), owner,
                                           webhook_url))
        except RowRejected as exc:  # parse_query should have caught it; the database is the last word
            raise RequestError(400, f"the database cannot store this question: {exc.reason}") from None
        if acceptance.kind == FOUND:
            assert acceptance.result is not None  # a FOUND acceptance carries the stored answer
            app.runtime.query_counts["database"] += 1
            await cache.put_many([acceptance.result])
            return self.json(found("database", acceptance.result))
        if acceptance.kind == OVER_LIMIT:
            assert owner is not None and owner.limits.max_in_flight is not None  # only a bounded key is refused
            app.runtime.query_counts["over_in_flight_limit"] += 1
            logger.info("refused a question of key %r: its %d questions in flight are unanswered",
                        owner.name, owner.limits.max_in_flight)
            return self.json({"error": f"API key {owner.name!r} has {owner.limits.max_in_flight} questions "
                                       "in flight (its max_in_flight); retry when one is answered"},
                             status=429, headers={"Retry-After": retry_after_header(
                                 settings.in_flight_retry_after_seconds)})
        if acceptance.kind == IN_FLIGHT:
            app.runtime.query_counts["in_flight"] += 1
            return self.json({"message": "question is already being processed", "question_id": qid,
                              "status": live_status(acceptance)}, status=202)
        job = Job(question_id=qid, question_text=query.question_text, original_answer=acceptance.original_answer,
                  accepted_at=acceptance.accepted_at, epoch=acceptance.epoch)
        await enqueue(job)
        app.runtime.query_counts["accepted"] += 1
        return self.json({"message": "question accepted", "question_id": qid, "status": State.PENDING}, status=202)
