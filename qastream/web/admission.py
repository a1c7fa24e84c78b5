"""Bounds at the edge: the admission gate, and time limits on what a view waits for.

The gate covers the routes that do work (``POST /query``, ``GET /status``);
``/health`` and ``/metrics`` are not gated: an overloaded worker must still
say so to its orchestrator and its operators.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from functools import wraps
from typing import Any, AsyncIterator

from faust.web import Request, Response, View

from qastream.app import app
from qastream.errors import Unavailable
from qastream.web.requests import Handler


def admitted(handler: Handler) -> Handler:
    """Run ``handler`` if the gate admits the request, else raise :class:`Unavailable` (503).

    Put it under ``@guarded``, which renders the 503 with ``Retry-After``.
    The check runs before the body is read, so a refusal costs nothing.
    """

    @wraps(handler)
    async def wrapper(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        gate = app.runtime.gate  # the same gate for leave(), even if the runtime is renewed meanwhile
        if not gate.try_enter():
            raise Unavailable("overloaded", f"worker is at its limit of {gate.limit} requests in flight; retry later")
        try:
            return await handler(view, request, *args, **kwargs)
        finally:
            gate.leave()

    return wrapper


@asynccontextmanager
async def bounded(dependency: str, seconds: float) -> AsyncIterator[None]:
    """Raise :class:`Unavailable` (a 503 under ``@guarded``) when the block waits on ``dependency`` too long."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise Unavailable(dependency, f"the {dependency} did not answer within {seconds:g} s; retry later") from None
