"""Reading and checking request bodies, with a clear 4xx for every kind of bad input.

A worker serves HTTP on the same event loop that drives its agents, so a bad
request must turn into an answer, never an exception that reaches Faust.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from functools import wraps
from typing import Any, Awaitable, Callable, Optional, cast

from aiohttp.web import BaseRequest
from faust.web import Request, Response, View
from faust.web.exceptions import WebError

from qastream.app import settings
from qastream.errors import RequestError, Unavailable
from qastream.policy.admission import retry_after_header
from qastream.policy.ids import is_question_id, normalise
from qastream.policy.webhook_targets import TargetRefused, check_url

logger = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)
_CHUNK = 65536


@dataclass(frozen=True)
class QueryInput:
    """A validated ``POST /query`` body."""

    question_text: str
    original_answer: Optional[str]


def check_content_type(content_type: str) -> None:
    """415 unless the body is declared as JSON."""
    if content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise RequestError(415, f"Content-Type must be application/json, got {content_type or 'none'!r}")


def decode_json(body: bytes) -> Any:
    """The parsed body; 400 with the parser's reason when it is not JSON."""
    try:
        # Decode first: json.loads on bytes would guess UTF-16/32 from a BOM.
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(400, "body is not UTF-8 text") from None
    except ValueError as exc:
        raise RequestError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        # The C parser recurses once per open bracket: 5,000 of them used to reach guarded() as a 503.
        raise RequestError(400, "body is nested too deeply to parse") from None


def unstorable(name: str, value: str) -> Optional[str]:
    """Why ``value`` cannot be stored or sent on, or ``None`` when it can.

    JSON lets a client send a lone surrogate (``"\\ud800"``), which no
    UTF-8 encoder (PostgreSQL, SQLite, Redis, the topics) accepts, and NUL,
    which PostgreSQL text rejects.  Either one used to fail the whole
    group-committed batch it shared with other clients' questions.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"{name} contains a lone surrogate (U+{ord(value[exc.start]):04X}) at character {exc.start}: "
                "text must be valid Unicode")
    nul = value.find("\x00")
    if nul >= 0:
        return f"{name} contains a NUL character at character {nul}, which the database cannot store"
    return None


def parse_query(payload: Any, max_chars: int) -> QueryInput:
    """Validate a query body: ``question_text`` required, ``original_answer`` optional."""
    if not isinstance(payload, dict):
        raise RequestError(400, "body must be a JSON object with a question_text field")
    text = payload.get("question_text")
    if text is None:
        raise RequestError(400, "question_text is required")
    if not isinstance(text, str):
        raise RequestError(400, "question_text must be a string")
    if not normalise(text):
        raise RequestError(400, "question_text must not be empty")
    reference = payload.get("original_answer")
    if reference is not None and not isinstance(reference, str):
        raise RequestError(400, "original_answer must be a string or null")
    for name, value in (("question_text", text), ("original_answer", reference)):
        if value is None:
            continue
        if len(value) > max_chars:
            raise RequestError(400, f"{name} is longer than {max_chars} characters")
        problem = unstorable(name, value)
        if problem:
            raise RequestError(400, problem)
    reference = reference.strip() if reference and reference.strip() else None
    return QueryInput(question_text=text.strip(), original_answer=reference)


def parse_webhook_url(payload: Any, *, secret_set: bool, allowed_hosts: frozenset[str]) -> Optional[str]:
    """The body's optional ``webhook_url``, checked (:func:`check_url`); 400 saying why when refused.

    Refused outright when no ``QASTREAM_WEBHOOK_SECRET`` is set: an unsigned
    event could not be told from a forged one, so none is sent, and a client
    told so now does better than one whose webhook silently never comes.
    """
    value = payload.get("webhook_url") if isinstance(payload, dict) else None
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(400, "webhook_url must be a string or null")
    if not secret_set:
        raise RequestError(400, "webhooks are not enabled on this server (QASTREAM_WEBHOOK_SECRET is not set)")
    try:
        return check_url(value.strip(), allowed_hosts).url
    except TargetRefused as exc:
        raise RequestError(400, str(exc)) from None


def parse_question_id(raw: str) -> str:
    """A path's question id; 404 for anything that cannot be one.

    Checked before the request is routed: routing encodes and hashes the key
    and needs the broker's metadata, so an id that cannot exist (a NUL, a
    lone surrogate from ``%ED%A0%80``) is answered here, by any worker,
    without reaching the table, another worker or the database.
    """
    if not is_question_id(raw):
        raise RequestError(404, f"{raw!r} is not a question id (16 hex digits, as POST /query returns)")
    return raw


def http(request: Request) -> BaseRequest:
    """The aiohttp request under Faust's ``Request`` type, which declares only what every driver has."""
    return cast(BaseRequest, request)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it passes ``limit`` bytes."""
    raw = http(request)
    declared = raw.content_length
    if declared is not None and declared > limit:
        raise RequestError(413, f"body of {declared} bytes is over the limit of {limit} bytes")
    body = bytearray()
    while True:
        chunk = await raw.content.read(_CHUNK)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"body is over the limit of {limit} bytes")


async def read_json(request: Request, limit: int, timeout: Optional[float] = None) -> Any:
    """Content type, size and syntax checked, in that order; 408 when the body takes over ``timeout`` seconds.

    A client that trickles its body (or declares one and never sends it)
    would otherwise hold its admission slot for as long as it likes.
    """
    check_content_type(http(request).content_type)
    try:
        async with asyncio.timeout(timeout):
            body = await read_body(request, limit)
    except TimeoutError:
        raise RequestError(408, f"request body not received within {timeout:g} s") from None
    return decode_json(body)


Handler = Callable[..., Awaitable[Response]]


def unavailable(view: View, message: str, question_id: Optional[str] = None) -> Response:
    """A 503 that says when to come back (and which question, when it was stored)."""
    body = {"error": message} if question_id is None else {"error": message, "question_id": question_id}
    return view.json(body, status=503, headers={"Retry-After": retry_after_header(settings.retry_after_seconds)})


def guarded(handler: Handler) -> Handler:
    """Turn :class:`RequestError` into its 4xx and any other failure into a 503, never a 500.

    A 503 tells clients the failure is on our side and worth retrying (the
    database or broker is unreachable, the worker is overloaded), with
    ``Retry-After``; the cause is logged here.
    """

    @wraps(handler)
    async def wrapper(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(view, request, *args, **kwargs)
        except RequestError as err:
            return view.json({"error": err.message}, status=err.status)
        except Unavailable as err:
            return unavailable(view, err.message, err.question_id)
        except WebError:
            raise  # Faust renders its own errors (e.g. 503 while partitions are unassigned)
        except Exception as exc:
            logger.exception("%s %s failed", request.method, http(request).path)
            return unavailable(view, f"temporarily unavailable: {type(exc).__name__}")

    return wrapper
