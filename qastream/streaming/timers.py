"""Timers that outlive a failed tick.

An exception that escapes an ``@app.timer`` function crashes the whole
worker (Faust treats it as a crashed service): a reconciliation tick that
could not reach the database for a second stopped a worker that would
otherwise have served again as soon as the database answered.
"""

from __future__ import annotations

import logging
from functools import wraps
from typing import Awaitable, Callable

logger = logging.getLogger(__name__)


def survives_failures(tick: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """Log a failed tick and let the timer try again at the next one."""

    @wraps(tick)
    async def wrapper() -> None:
        try:
            await tick()
        except Exception as exc:
            logger.warning("timer %s failed (%r): trying again at the next tick", tick.__name__, exc)

    return wrapper
