"""``GET /status/{question_id}``: where a question is, from the worker that owns it."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from faust import web

from qastream.app import app, settings, storage
from qastream.policy.lifecycle import State
from qastream.policy.live import Change, record_change, row_change
from qastream.streaming.routing import ensure_metadata, forwarded
from qastream.tables.status import attempts_table, status_table
from qastream.web.access import over_rate, principal_of, rate_refused
from qastream.web.admission import admitted, bounded
from qastream.web.requests import guarded, parse_question_id


def public_status(record: Mapping[str, Any], attempts: Mapping[str, Any] | None) -> dict[str, Any]:
    """A status-table record as users see it."""
    body: dict[str, Any] = {
        "question_id": record["question_id"],
        "status": record["state"],
        "stage": record["stage"],
        "attempt": record["attempt"],
        "processing_attempts": attempts["generations"] if attempts else 0,
        "error_retries": record["retries"],
        "accepted_at": record["accepted_at"],
        "updated_at": record["updated_at"],
        "source": "status_table",
    }
    if record["state"] == State.COMPLETED and record.get("result"):
        body["result"] = record["result"]
    if record["state"] == State.FAILED or record.get("detail"):
        body["detail"] = record.get("detail")
    return body


def unknown(view: web.View, question_id: str) -> web.Response:
    """The 404 of a question nobody asked, and of one the key did not: the two must not differ."""
    return view.json({"error": f"unknown question id {question_id!r}"}, status=404)


@app.page("/status/{question_id}")
class StatusView(web.View):
    """Status of one question; routed to the worker owning its partition."""

    @guarded
    @admitted
    async def get(self, request: web.Request, question_id: str) -> web.Response:
        question_id = parse_question_id(question_id)
        # Metadata comes from the broker the first time: a stalled broker must cost a 503, not a hang.
        async with bounded("broker", settings.forward_timeout_seconds):
            await ensure_metadata(status_table.changelog_topic.get_topic_name())
        response = await forwarded(self, request, status_table.name, question_id)
        return response if response is not None else await self.owned(request, question_id)

    async def owned(self, request: web.Request, question_id: str) -> web.Response:
        """Answer from this worker's partition of the status table, then the database."""
        refusal = await refused(self, request, question_id, f"GET /status/{question_id}")
        if refusal is not None:
            return refusal
        now = await current(question_id)
        return self.json(now.body) if now is not None else unknown(self, question_id)


async def refused(view: web.View, request: web.Request, question_id: str, what: str) -> Optional[web.Response]:
    """The 429 or 404 the request's key gets for ``question_id``; ``None`` when it may read it now.

    Charged to the key's rate here, on the worker that answers: once per
    request, however many workers it passed.  A key that did not ask the
    question gets the 404 of an unknown one, so nobody learns which
    questions others asked.  Ownership is read from the database, shared by
    every worker, whichever worker answers.
    """
    principal = principal_of(request)
    if principal is None:
        return None
    wait = await over_rate(principal)
    if wait is not None:
        body, headers = rate_refused(what, principal, wait)
        return view.json(body, status=429, headers=headers)
    if not principal.sees_everything:
        async with bounded("database", settings.db_statement_timeout_seconds):
            if not await storage.owns(principal.key_id, question_id):
                return unknown(view, question_id)
    return None


async def current(question_id: str) -> Optional[Change]:
    """Where the question is now, from this worker's status table, else the database; ``None`` if neither knows it.

    The change's body is what ``GET /status`` answers.
    """
    record = status_table.get(question_id)
    if record is not None:
        return record_change(record, public_status(record, attempts_table.get(question_id)))
    async with bounded("database", settings.db_statement_timeout_seconds):
        row = await storage.lookup(question_id)
    return row_change(row, {**row, "source": "database"}) if row is not None else None
