"""``/batches``: submit many questions as one job, follow it, fetch its results, cancel it.

A batch is stored before it is answered: the batch row, then its items in
chunks of :data:`ACCEPT_CHUNK`, each chunk one transaction that accepts its
questions exactly as ``POST /query`` does (questions already answered count
as completed at once; a question asked twice, in the batch or elsewhere, is
generated once and each line still gets its result).  The new questions are
then produced by :func:`qastream.streaming.intake.enqueue_bulk` (the bulk lane) in the
background: they are pending in the database already, so a send that never
happens is reconciliation's to repeat, and a 20,000-line batch answers
without waiting for 20,000 sends.

A key sees and cancels its own batches only (an admin key every batch);
another key's batch answers the 404 of an unknown one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
import uuid
from typing import Any, Optional

from aiohttp import web as aioweb
from faust import web

from qastream.app import app, settings, storage
from qastream.db.batches import Batch, Item, NewBatch
from qastream.db.queries import CREATED, FOUND, RESUBMITTED, Acceptance, Submission
from qastream.errors import RequestError, RetryableError
from qastream.models import Job
from qastream.policy.access import Limits, Principal
from qastream.policy.admission import retry_after_header
from qastream.policy.batches import BatchStatus, RequestCounts, fold_counts
from qastream.policy.ids import question_id
from qastream.policy.lifecycle import State
from qastream.streaming.intake import enqueue_bulk
from qastream.web.access import principal_of
from qastream.web.admission import admitted, bounded
from qastream.web.batch_input import is_ndjson, parse_batch, refusal_body
from qastream.web.cancel import announce_later
from qastream.web.requests import JSON_TYPES, guarded, http, parse_webhook_url, read_body
from qastream.webhooks import deliveries

logger = logging.getLogger(__name__)

#: Questions accepted per transaction: a large batch is many short transactions, so ``POST /query``'s
#: group commits (on the same writer) are not held behind one long one.
ACCEPT_CHUNK = 500
#: Result lines read from the database per query while ``/results`` streams.
RESULTS_CHUNK = 500
#: Batches ``GET /batches`` lists by default and at most: each shows counts read from all its items.
DEFAULT_LISTED, MAX_LISTED = 10, 50
#: A batch id: ``batch_`` and 24 hex digits (96 random bits).
BATCH_ID = re.compile(r"batch_[0-9a-f]{24}")


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex[:24]}"


def parse_batch_id(raw: str) -> str:
    """A path's batch id; 404 for anything that cannot be one (before any database read)."""
    if not BATCH_ID.fullmatch(raw):
        raise RequestError(404, f"unknown batch id {raw!r}")
    return raw


def parse_list_limit(raw: Optional[str]) -> int:
    """``GET /batches``' ``limit``: 1 to :data:`MAX_LISTED`, 400 otherwise."""
    if raw is None:
        return DEFAULT_LISTED
    try:
        limit = int(raw)
    except ValueError:
        raise RequestError(400, f"limit must be an integer, got {raw!r}") from None
    if not 1 <= limit <= MAX_LISTED:
        raise RequestError(400, f"limit must be between 1 and {MAX_LISTED}, got {limit}")
    return limit


def public_batch(batch: Batch, counts: RequestCounts, delivery: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """A batch as ``GET /batches/{id}`` shows it; ``delivery`` is its webhook's (``None`` before it is scheduled)."""
    return {"batch_id": batch.batch_id, "status": batch.status, "request_counts": counts.as_json(),
            "created_at": batch.created_at, "updated_at": batch.updated_at, "finished_at": batch.finished_at,
            "cancelled_at": batch.cancelled_at, "metadata": batch.metadata,
            "webhook": {"url": batch.webhook_url, "state": delivery["state"] if delivery else None,
                        "delivery": delivery}}


async def batch_delivery(batch: Batch) -> Optional[dict[str, Any]]:
    """The delivery of the batch's end webhook, once scheduled (state, attempts, last error)."""
    if not batch.webhook_url:
        return None
    found = await deliveries(batch.batch_id)
    return found[-1] if found else None


def unbounded(owner: Optional[Principal]) -> Optional[Principal]:
    """The owner without its in-flight bound: a batch checks the bound once, for all its questions."""
    if owner is None or owner.limits.max_in_flight is None:
        return owner
    return dataclasses.replace(owner, limits=Limits(owner.limits.rate, owner.limits.burst, None))


def counts_at_acceptance(outcomes: list[Acceptance]) -> RequestCounts:
    """What a batch's lines are the moment it is accepted: answered questions are completed, the rest in flight."""
    return fold_counts(len(outcomes), ((State.COMPLETED, bool((o.result or {}).get("low_quality"))) if o.kind == FOUND
                                       else (None, None) for o in outcomes))


def job_of(item: Item, acceptance: Acceptance) -> Job:
    return Job(question_id=acceptance.question_id, question_text=item.submission.question_text,
               original_answer=acceptance.original_answer, accepted_at=acceptance.accepted_at,
               epoch=acceptance.epoch)


class PartlyStored(RetryableError):
    """A batch's acceptance stopped part way (the database failed or did not answer in time).

    The lines not stored can be sent again; the request answers 503 (:func:`cut_short`).
    """

    def __init__(self, stored: int, cause: BaseException) -> None:
        super().__init__(f"{stored} line(s) stored: {cause!r}")
        self.stored = stored


async def accept_items(batch_id: str, items: list[Item]) -> tuple[list[Acceptance], list[Job]]:
    """Accept the items chunk by chunk; their acceptances and the jobs of the questions to produce.

    Raises :class:`PartlyStored` when a chunk fails; the jobs of the chunks
    stored before it are produced all the same.
    """
    outcomes: list[Acceptance] = []
    jobs: list[Job] = []
    try:
        for start in range(0, len(items), ACCEPT_CHUNK):
            chunk = items[start:start + ACCEPT_CHUNK]
            async with bounded("database", settings.db_statement_timeout_seconds):
                accepted = await storage.accept_batch_items(batch_id, chunk)
            outcomes.extend(accepted)
            jobs.extend(job_of(item, a) for item, a in zip(chunk, accepted) if a.kind in (CREATED, RESUBMITTED))
    except Exception as exc:
        if jobs:
            in_background(jobs, batch_id)
        raise PartlyStored(len(outcomes), exc) from exc
    return outcomes, jobs


async def cut_short(view: web.View, batch_id: str, total: int, failure: PartlyStored) -> web.Response:
    """The 503 of a batch whose acceptance stopped part way, made a smaller batch of what was stored.

    Its total becomes the items it holds (read on the single writer, after a
    chunk that timed out but still commits), so it can still end; the
    client learns which lines to send again.  If even that fails, the batch
    keeps a total it cannot reach and stays in progress (logged).
    """
    stored = failure.stored
    try:
        async with bounded("database", settings.db_statement_timeout_seconds):
            stored = await storage.shrink_batch(batch_id)
    except Exception as exc:
        logger.error("batch %s: its total could not be cut to the lines stored (%r); it cannot end", batch_id, exc)
    logger.warning("batch %s: acceptance stopped after %d of %d line(s): %s", batch_id, stored, total,
                   failure.__cause__)
    return view.json({"error": f"the database failed while storing the batch: its first {stored} of {total} "
                               "valid line(s) were stored as this batch and will be answered; submit the rest "
                               "again", "batch_id": batch_id, "stored_lines": stored},
                     status=503, headers={"Retry-After": retry_after_header(settings.retry_after_seconds)})


def in_background(jobs: list[Job], batch_id: str) -> None:
    """Produce the jobs after the answer; a failure is left to reconciliation (the questions are stored)."""

    async def run() -> None:
        try:
            sent = await enqueue_bulk(jobs)
            logger.info("batch %s: enqueued %d question(s)", batch_id, sent)
        except Exception as exc:
            logger.error("batch %s: enqueueing failed (%r); reconciliation re-enqueues what was not sent",
                         batch_id, exc)

    app.runtime.spawn(run())


async def read_batch_body(request: web.Request) -> tuple[bytes, bool]:
    """The body and whether it is NDJSON; 415 for any other type, 413 past ``batch_max_bytes``, 408 when slow."""
    content_type = http(request).content_type
    ndjson = is_ndjson(content_type)
    if not ndjson and content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise RequestError(415, "Content-Type must be application/json or application/x-ndjson, got "
                                f"{content_type or 'none'!r}")
    try:
        async with asyncio.timeout(settings.body_timeout_seconds):
            return await read_body(request, settings.batch_max_bytes), ndjson
    except TimeoutError:
        raise RequestError(408, f"request body not received within {settings.body_timeout_seconds:g} s") from None


async def visible_batch(request: web.Request, batch_id: str) -> Batch:
    """The batch if the request's key may see it; the 404 of an unknown batch otherwise."""
    batch_id = parse_batch_id(batch_id)
    async with bounded("database", settings.db_statement_timeout_seconds):
        batch = await storage.batch(batch_id)
    principal = principal_of(request)
    if batch is None or (principal is not None and not principal.sees_everything
                         and batch.owner_key_id != principal.key_id):
        raise RequestError(404, f"unknown batch id {batch_id!r}")
    return batch


@app.page("/batches")
class BatchesView(web.View):
    """Submit a batch (``POST``) or list the latest ones (``GET``)."""

    @guarded
    @admitted
    async def post(self, request: web.Request) -> web.Response:
        body, ndjson = await read_batch_body(request)
        query = http(request).query
        checked = parse_batch(body, ndjson, settings.max_question_chars, settings.batch_max_questions,
                              webhook_url=query.get("webhook_url"))
        if checked.webhook_url is not None:  # may it be called at all (scheme, addresses, a secret to sign with)
            checked = dataclasses.replace(checked, webhook_url=parse_webhook_url(
                {"webhook_url": checked.webhook_url}, secret_set=bool(settings.webhook_secret),
                allowed_hosts=settings.webhook_hosts()))
        skip_invalid = query.get("skip_invalid", "").lower() in ("1", "true", "yes")
        if checked.errors and not skip_invalid:
            return self.json(refusal_body(checked.errors), status=400)
        if not checked.lines:
            return self.json({**refusal_body(checked.errors), "error": "the batch has no valid question"}, status=400)
        owner = principal_of(request)
        now = time.time()
        asker = unbounded(owner)
        items = [Item(line.line, line.custom_id, Submission(question_id(line.query.question_text),
                                                            line.query.question_text, line.query.original_answer,
                                                            now, asker)) for line in checked.lines]
        batch = NewBatch(new_batch_id(), len(items), now, checked.metadata, checked.webhook_url,
                         owner.key_id if owner is not None else None)
        bound = owner.limits.max_in_flight if owner is not None else None
        async with bounded("database", settings.db_statement_timeout_seconds):
            created = await storage.create_batch(batch, len({i.submission.question_id for i in items}), bound)
        if not created:
            assert owner is not None
            return self.json({"error": f"API key {owner.name!r} may have {bound} questions in flight: this batch "
                                       "would take it past that; retry when some are answered"},
                             status=429, headers={"Retry-After": retry_after_header(
                                 settings.in_flight_retry_after_seconds)})
        try:
            outcomes, jobs = await accept_items(batch.batch_id, items)
        except PartlyStored as failure:
            return await cut_short(self, batch.batch_id, len(items), failure)
        if jobs:
            in_background(jobs, batch.batch_id)
        app.runtime.query_counts["batch_questions"] += len(items)
        logger.info("batch %s: %d line(s), %d new question(s), %d skipped", batch.batch_id, len(items), len(jobs),
                    len(checked.errors))
        answer: dict[str, Any] = {"batch_id": batch.batch_id, "status": BatchStatus.IN_PROGRESS,
                                  "request_counts": counts_at_acceptance(outcomes).as_json()}
        if checked.errors:
            answer["skipped_lines"] = refusal_body(checked.errors)["invalid_lines"]
        return self.json(answer, status=202)

    @guarded
    @admitted
    async def get(self, request: web.Request) -> web.Response:
        limit = parse_list_limit(http(request).query.get("limit"))
        principal = principal_of(request)
        owner = principal.key_id if principal is not None and not principal.sees_everything else None
        async with bounded("database", settings.db_statement_timeout_seconds):
            found = await storage.latest_batches(limit, owner)
            # The delivery too (one indexed read, for batches with a webhook): the dashboard's panel shows it.
            shown = [public_batch(b, await storage.batch_counts(b), await batch_delivery(b)) for b in found]
        return self.json({"batches": shown})


@app.page("/batches/{batch_id}")
class BatchView(web.View):
    """One batch: its state and counts (``GET``), or cancel it (``DELETE``)."""

    @guarded
    @admitted
    async def get(self, request: web.Request, batch_id: str) -> web.Response:
        batch = await visible_batch(request, batch_id)
        async with bounded("database", settings.db_statement_timeout_seconds):
            counts = await storage.batch_counts(batch)
            delivery = await batch_delivery(batch)
        return self.json(public_batch(batch, counts, delivery))

    @guarded
    @admitted
    async def delete(self, request: web.Request, batch_id: str) -> web.Response:
        """Cancel: pending questions are cancelled in the database before the answer (see qastream.web.cancel)."""
        batch = await visible_batch(request, batch_id)
        async with bounded("database", settings.db_statement_timeout_seconds):
            after, cancelled = await storage.cancel_batch(batch.batch_id, time.time())
        assert after is not None  # batches are never deleted
        if cancelled:
            app.runtime.query_counts["cancelled"] += len(cancelled)
            logger.info("batch %s: cancelled %d question(s)", batch.batch_id, len(cancelled))
            announce_later(cancelled)
        async with bounded("database", settings.db_statement_timeout_seconds):
            counts = await storage.batch_counts(after)
        return self.json(public_batch(after, counts))


@app.page("/batches/{batch_id}/results")
class BatchResultsView(web.View):
    """The batch's results as NDJSON, one line per item in line order, streamed from the database."""

    @guarded
    @admitted
    async def get(self, request: web.Request, batch_id: str) -> Any:
        batch = await visible_batch(request, batch_id)
        async with bounded("database", settings.db_statement_timeout_seconds):
            page = await storage.batch_results(batch.batch_id, 0, RESULTS_CHUNK)
        response = aioweb.StreamResponse(headers={"Content-Type": "application/x-ndjson; charset=utf-8"})
        await response.prepare(http(request))
        # Past this point the status is sent: a failure can only cut the stream short, and the client
        # sees fewer lines than the batch's total.
        while page:
            await response.write("".join(result_line(r) for r in page).encode("utf-8"))
            if len(page) < RESULTS_CHUNK:
                break
            async with bounded("database", settings.db_statement_timeout_seconds):
                page = await storage.batch_results(batch.batch_id, page[-1]["line"], RESULTS_CHUNK)
        await response.write_eof()
        return response


def result_line(result: dict[str, Any]) -> str:
    """One NDJSON line (the item's line number is the order, not a field)."""
    fields = {k: v for k, v in result.items() if k != "line"}
    return json.dumps(fields, ensure_ascii=False) + "\n"
