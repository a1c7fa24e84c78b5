"""``GET /status/{question_id}/events``: a question's status changes as Server-Sent Events, as they happen.

Like ``GET /status``, the stream comes from the worker that owns the
question's partition of the status table: another worker relays it chunk
by chunk (:mod:`qastream.streaming.relay`).  The owner checks the key
(the same 404 for another key's question as for an unknown one) and
charges its rate once, then sends the question's current state (from the
status table, or the database once the question has left it) and one
event per change ``track`` applies after that (:mod:`qastream.streaming.watchers`),
named for the stage (:mod:`qastream.policy.live`), and closes the stream
after the terminal event.  A client reconnecting with ``Last-Event-ID``
gets only what it has not seen; if that was the terminal event, a 204,
which tells ``EventSource`` to stop reconnecting.

Everything is bounded: streams per worker (``QASTREAM_LIVE_MAX_STREAMS``,
503 past it), a stream's length (``QASTREAM_LIVE_MAX_SECONDS``; the client
reconnects), and each silence (a ``: ping`` comment every
``QASTREAM_LIVE_PING_SECONDS``, at which the stream also notices a client
that left, or that a rebalance gave the question to another worker: it
closes, and the reconnecting client reaches the new owner).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Optional, cast

from aiohttp import web as aioweb
from faust import web
from faust.web.exceptions import ServiceUnavailable

from qastream.app import app, settings
from qastream.errors import Unavailable
from qastream.policy.lifecycle import Version
from qastream.policy.live import Change, is_news, parse_event_id, record_change
from qastream.streaming.relay import relay, was_relayed
from qastream.streaming.routing import ensure_metadata, owner_of
from qastream.streaming.watchers import Mailbox, Watchers
from qastream.tables.status import status_table
from qastream.web import sse
from qastream.web.admission import bounded
from qastream.web.requests import guarded, http, parse_question_id
from qastream.web.status import current, public_status, refused, unknown

logger = logging.getLogger(__name__)


def frame(change: Change) -> bytes:
    """The SSE event of a change: its name, its version as id, and the ``GET /status`` body as data."""
    return sse.event(change.name, change.id, change.body)


def answer(response: aioweb.StreamResponse) -> web.Response:
    """An aiohttp response as a view's answer: Faust types it as its abstract ``Response``, and its aiohttp
    driver passes whatever the view returns to aiohttp, a prepared stream included."""
    return cast(web.Response, response)


def moved(question_id: str) -> bool:
    """Whether another worker owns the question now (a rebalance); ``False`` while nobody does."""
    try:
        return owner_of(status_table.name, question_id) is not None
    except ServiceUnavailable:
        return False  # mid-rebalance: ask again at the next ping


async def follow(response: aioweb.StreamResponse, mailbox: Mailbox, first: Optional[Change], seen: Version,
                 question_id: str) -> None:
    """Write ``first`` (``None`` when the client has it), then every change past ``seen``, until the terminal one.

    Ends early, without an error (the response has started), when the
    client leaves, the stream reaches its longest, the worker stops or the
    question moves to another worker.
    """
    try:
        async with asyncio.timeout(settings.live_max_seconds):
            if first is not None:
                await response.write(frame(first))
                if first.terminal:
                    return
            while True:
                update = await mailbox.get(settings.live_ping_seconds)
                if mailbox.closed:
                    return
                if update is None:
                    if moved(question_id):
                        return
                    await response.write(sse.PING)
                    continue
                change = record_change(update.record, public_status(update.record, update.attempts))
                if change.version <= seen:
                    continue  # already covered by what was sent (or by the client's Last-Event-ID)
                await response.write(frame(change))
                seen = change.version
                if change.terminal:
                    return
    except (ConnectionError, TimeoutError):
        return  # the client left, or the stream reached QASTREAM_LIVE_MAX_SECONDS: the client reconnects
    except Exception:
        logger.exception("live status stream of %s failed", question_id)


@app.page("/status/{question_id}/events")
class StatusEventsView(web.View):
    """A question's status changes as Server-Sent Events, from the worker owning its partition."""

    @guarded
    async def get(self, request: web.Request, question_id: str) -> web.Response:
        question_id = parse_question_id(question_id)
        watchers = app.runtime.watchers
        gate = watchers.gate  # the same gate for leave(), even if the runtime is renewed meanwhile
        if not gate.try_enter():
            raise Unavailable("streams", f"worker has its limit of {gate.limit} live status streams open; "
                                         "retry later")
        try:
            # Metadata comes from the broker the first time: a stalled broker must cost a 503, not a hang.
            async with bounded("broker", settings.forward_timeout_seconds):
                await ensure_metadata(status_table.changelog_topic.get_topic_name())
            owner = owner_of(status_table.name, question_id)
            if owner is None:
                return await self.served(request, question_id, watchers)
            if was_relayed(request.headers):
                raise Unavailable("rebalancing", "the question's partition is moving between workers; retry later")
            with watchers.relaying():
                # The owner writes at least every ping interval once it streams; before that it may wait on
                # the broker and the database (twice), each bounded on its side.
                silence = (settings.live_ping_seconds + settings.forward_timeout_seconds
                           + 2 * settings.db_statement_timeout_seconds)
                return answer(await relay(http(request), owner, connect_seconds=settings.forward_timeout_seconds,
                                          silence_seconds=silence,
                                          max_seconds=settings.live_max_seconds + settings.forward_timeout_seconds))
        finally:
            gate.leave()

    async def served(self, request: web.Request, question_id: str, watchers: Watchers) -> web.Response:
        """The stream from this worker's status table (or the database, for a question that left it)."""
        refusal = await refused(self, request, question_id, f"GET /status/{question_id}/events")
        if refusal is not None:
            return refusal
        last = parse_event_id(request.headers.get("Last-Event-ID"))
        # Watching before reading the current state: no change can fall between the two.
        with watchers.watching(question_id) as mailbox:
            now = await current(question_id)
            if now is None:
                return unknown(self, question_id)
            if http(request).method == "HEAD":
                return answer(aioweb.Response(headers=sse.HEADERS))  # what a GET would start with; nothing held open
            news = is_news(now, last)
            if now.terminal and not news:
                return answer(aioweb.Response(status=204))  # the client has the last event there is
            response = aioweb.StreamResponse(status=200, headers=sse.HEADERS)
            await response.prepare(http(request))
            await follow(response, mailbox, now if news else None, max(now.version, last or now.version),
                         question_id)
            return answer(response)


async def close_streams(_: aioweb.Application) -> None:
    """End every live stream as the web server shuts down, so none holds the worker's stop."""
    app.runtime.watchers.close_all()


# Installed as the module is discovered, before the web server starts (its signals freeze then).
app.web.web_app.on_shutdown.append(close_streams)  # type: ignore[attr-defined]  # the aiohttp driver has it
