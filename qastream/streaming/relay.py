"""Relaying a live status stream from the worker that owns the question, chunk by chunk.

:func:`~qastream.streaming.routing.forwarded` reads the owner's whole answer
before answering, which a stream that lasts minutes never lets it do.
:func:`relay` instead opens the owner's stream with the client's key and
copies each chunk to the client as it arrives, so a client connected to any
worker gets the events as the owner sends them.  An answer other than a
stream (401, 404, 429, a 204 after the last event) comes back whole, with
the headers that tell the client what to do next.

Every wait is bounded: connecting to the owner, each silence of the
owner's stream (it pings at an interval, so a longer silence means it is
gone) and the whole stream.  The relayed request carries
:data:`RELAYED_MARK`: a worker that gets one for a question it does not own
either (a rebalance in progress, each worker believing the other owns it)
answers 503 instead of relaying it again, so a request cannot circle.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Mapping

from aiohttp import ClientError, ClientSession, ClientTimeout
from aiohttp import web as aioweb
from yarl import URL

from qastream.errors import Unavailable
from qastream.streaming.routing import PASSED_BACK
from qastream.web import sse

logger = logging.getLogger(__name__)

#: What the client sent that the owner needs: the key it checks, where a reconnecting client left off,
#: what the client accepts.  Hop-by-hop headers (Connection, Host, Accept-Encoding) stay behind.
RELAYED_HEADERS = ("Authorization", "Last-Event-ID", "Accept")
#: Marks a request one worker relayed to another.
RELAYED_MARK = "X-Qastream-Relayed"


def relayed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers the owner gets: the client's :data:`RELAYED_HEADERS` and :data:`RELAYED_MARK`."""
    return {**{name: headers[name] for name in RELAYED_HEADERS if name in headers}, RELAYED_MARK: "1"}


def was_relayed(headers: Mapping[str, str]) -> bool:
    """Whether another worker relayed this request here."""
    return RELAYED_MARK in headers


async def relay(request: aioweb.BaseRequest, owner: URL, *, connect_seconds: float, silence_seconds: float,
                max_seconds: float) -> aioweb.StreamResponse:
    """The owner's answer to ``request``: its stream copied as it comes, or its refusal whole.

    Raises :class:`Unavailable` (a 503) when the owner cannot be reached or
    does not start answering within ``silence_seconds``.  Once the stream
    has started, its end (the owner closes it, falls silent longer than
    ``silence_seconds``, or ``max_seconds`` pass; the client leaves) ends
    the client's stream: a client reconnects and finds the owner again.
    """
    url = request.url.with_host(owner.host or "").with_port(owner.port)
    timeout = ClientTimeout(total=None, connect=connect_seconds, sock_connect=connect_seconds,
                            sock_read=silence_seconds)
    where = f"{owner.host}:{owner.port}"
    async with ClientSession(timeout=timeout, auto_decompress=False) as session:
        try:
            upstream = await session.request(request.method, url, headers=relayed_headers(request.headers),
                                             allow_redirects=False)
        except (ClientError, TimeoutError) as exc:
            raise Unavailable("owner", f"the worker owning the question ({where}) did not answer: "
                                       f"{type(exc).__name__}; retry later") from None
        async with upstream:
            if upstream.status != 200:
                try:
                    body = await upstream.read()
                except (ClientError, TimeoutError) as exc:
                    raise Unavailable("owner", f"the worker owning the question ({where}) did not finish its "
                                               f"answer: {type(exc).__name__}; retry later") from None
                headers = {name: upstream.headers[name] for name in PASSED_BACK if name in upstream.headers}
                return aioweb.Response(body=body or None, status=upstream.status, headers=headers,
                                       content_type=upstream.content_type if body else None)
            response = aioweb.StreamResponse(status=200, headers=sse.HEADERS)
            await response.prepare(request)
            try:
                async with asyncio.timeout(max_seconds):
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
            except (ClientError, ConnectionError, TimeoutError) as exc:
                logger.debug("relayed stream %s from %s ended: %r", request.path, where, exc)
            return response
