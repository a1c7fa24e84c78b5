"""``DELETE /query/{question_id}``: cancel a question not generated yet; and how a cancel is announced.

Why the database decides, not the status table
----------------------------------------------
The status table is folded asynchronously from the events topic by
``track``, on the worker that owns the question's partition, so a
``cancelled`` event sent here may be applied after this request has
answered, on another worker.  Waiting for it would need the request routed
to that worker, and a batch's questions are spread over every partition.
Instead the cancel is committed in the database (``questions.status =
cancelled``, the store of record) *before* the answer, and ``generate``
reads the database right before it calls the LLM
(:func:`qastream.agents.generate.cancelled`): a call that starts after this
answer finds the question cancelled.  Only a call whose check ran before
the commit can still start, within the moment between that check and the
call itself: that is a call already in flight, and its answer is stored.

The ``cancelled`` event sent after the answer brings the status table (``GET
/status``, the deadlines, expiry) in step; ``generate`` also checks the table
first, which spares the database read once the event is applied.  If the
event is lost, ``generate`` reports the cancellation itself when it skips
the question.

A question is shared by everyone who asked its text: cancelling it cancels
it for every asker, and asking it again starts it over in a new epoch.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

from faust import web

from qastream.app import app, settings, storage, topics
from qastream.db.batches import Cancelled
from qastream.models import StatusEvent
from qastream.policy.lifecycle import Stage, State
from qastream.policy.webhooks import EventKind
from qastream.web.access import principal_of
from qastream.web.admission import admitted, bounded
from qastream.web.requests import guarded, parse_question_id
from qastream.web.status import unknown
from qastream.webhooks import announce_questions

logger = logging.getLogger(__name__)

#: The ``detail`` of a cancelled question's status.
CANCELLED_DETAIL = "cancelled by request before it was generated"


def cancel_event(cancelled: Cancelled, now: float) -> StatusEvent:
    """The status event of a cancellation: the canceller knows the epoch, not the attempt (see lifecycle)."""
    return StatusEvent(question_id=cancelled.question_id, stage=Stage.CANCELLED, epoch=cancelled.epoch, attempt=1,
                       retries=0, accepted_at=cancelled.accepted_at, at=now, detail=CANCELLED_DETAIL)


async def announce(cancelled: Sequence[Cancelled]) -> None:
    """Send the ``cancelled`` status events of questions cancelled in the database, then their webhooks."""
    now = time.time()
    for item in cancelled:
        await topics.events.send(key=item.question_id, value=cancel_event(item, now))
    await announce_questions(EventKind.QUESTION_CANCELLED, [
        (item.question_id, item.epoch, {"question_id": item.question_id, "status": State.CANCELLED,
                                        "detail": CANCELLED_DETAIL}) for item in cancelled])


def announce_later(cancelled: Sequence[Cancelled]) -> None:
    """Send the events after the answer: the cancel is in the database already, and a batch's 20,000 events
    would hold the request for seconds.  An event lost to a broker outage is reported by ``generate`` when it
    meets the question and finds it cancelled in the database."""

    async def run() -> None:
        try:
            await announce(cancelled)
        except Exception as exc:
            logger.warning("sending %d cancel event(s) failed (%r); generate reports them as it meets the questions",
                           len(cancelled), exc)

    app.runtime.spawn(run())


@app.page("/query/{question_id}")
class QuestionView(web.View):
    """Cancel one question (its owner or an admin key)."""

    @guarded
    @admitted
    async def delete(self, request: web.Request, question_id: str) -> web.Response:
        question_id = parse_question_id(question_id)
        principal = principal_of(request)
        async with bounded("database", settings.db_statement_timeout_seconds):
            if principal is not None and not principal.sees_everything:
                if not await storage.owns(principal.key_id, question_id):
                    return unknown(self, question_id)
            cancelled = await storage.cancel_questions([question_id], time.time())
            status = await storage.question_status(question_id)
        if status is None:
            return unknown(self, question_id)
        if cancelled:
            app.runtime.query_counts["cancelled"] += 1
            announce_later(cancelled)
        return self.json({"question_id": question_id, "status": status,
                          "cancelled": status == State.CANCELLED})
