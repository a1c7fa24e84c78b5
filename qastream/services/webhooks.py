"""The HTTP side of webhooks: one bounded POST at a time per slot, to checked addresses only.

:class:`WebhookClient` owns the aiohttp session that every attempt uses and
the slots that bound how many attempts run at once, in all and per host, so
a receiver that hangs holds at most ``host_concurrency`` slots for at most
``timeout`` seconds each.  Attempts run as tasks of their own: the agent that
starts them (:mod:`qastream.agents.webhooks`) never waits for a receiver.

The session resolves host names with :class:`CheckedResolver`, which refuses
a name if any address it resolves to is not public (unless the host is
allowed), and connects only to the addresses it checked: a name that
resolves to a public address when submitted and to 127.0.0.1 when sent (DNS
rebinding) is refused then.  Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Optional

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from mode import Service

from qastream.policy.webhook_targets import TargetRefused, check_url, refused_resolution

logger = logging.getLogger(__name__)

#: Most bytes of a receiver's answer kept as the error of a failed attempt.
ANSWER_EXCERPT_BYTES = 200


@dataclass(frozen=True)
class AttemptResult:
    """What one POST got: the status of the answer, or why there was none; ``refused`` when the target was."""

    status: Optional[int] = None
    error: Optional[str] = None
    refused: bool = False


class CheckedResolver(AbstractResolver):
    """A resolver that refuses a host if any of its addresses is not public, unless the host is allowed."""

    def __init__(self, allowed_hosts: frozenset[str]) -> None:
        self.allowed_hosts = allowed_hosts
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        reason = refused_resolution(host, [r["host"] for r in found], self.allowed_hosts)
        if reason:
            raise TargetRefused(f"webhook target refused: {reason}")
        return found

    async def close(self) -> None:
        await self._inner.close()


def refusal_in(exc: BaseException) -> Optional[TargetRefused]:
    """The :class:`TargetRefused` behind ``exc`` (aiohttp may wrap what the resolver raised), if any."""
    seen: Optional[BaseException] = exc
    while seen is not None:
        if isinstance(seen, TargetRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class WebhookClient(Service):
    """POSTs webhook bodies with a time-out, within slots, to checked targets."""

    def __init__(self, *, timeout: float, concurrency: int, host_concurrency: int, allowed_hosts: frozenset[str],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self.concurrency = concurrency
        self.host_concurrency = host_concurrency
        self.allowed_hosts = allowed_hosts
        self.session: Optional[aiohttp.ClientSession] = None
        #: Attempts running, by host; their sum is bounded by ``concurrency``.
        self.running: Counter[str] = Counter()
        self._attempts: set[asyncio.Task[None]] = set()

    async def on_start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=CheckedResolver(self.allowed_hosts), use_dns_cache=False,
                                         limit=self.concurrency)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def on_stop(self) -> None:
        for task in list(self._attempts):
            task.cancel()
        if self._attempts:
            await asyncio.gather(*self._attempts, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    def info(self) -> dict[str, Any]:
        """Attempts running now, in all and by host, and the bounds (for ``GET /metrics``)."""
        return {"in_flight": sum(self.running.values()), "in_flight_by_host": dict(self.running),
                "concurrency": self.concurrency, "host_concurrency": self.host_concurrency}

    def try_start(self, host: str, attempt: Callable[[], Awaitable[None]]) -> bool:
        """Run ``attempt()`` as a task if a slot is free for ``host``; ``False`` (and nothing run) if not."""
        if sum(self.running.values()) >= self.concurrency or self.running[host] >= self.host_concurrency:
            return False
        self.running[host] += 1
        task = asyncio.ensure_future(attempt())
        self._attempts.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._attempts.discard(finished)
            self.running[host] -= 1
            if self.running[host] <= 0:
                del self.running[host]
            if not finished.cancelled() and finished.exception() is not None:
                logger.error("webhook attempt to %s failed unexpectedly: %r", host, finished.exception())

        task.add_done_callback(done)
        return True

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        """One POST of ``body`` to ``url``, bounded by the time-out; never raises for the receiver's sake."""
        assert self.session is not None, "webhook client is not started"
        try:
            check_url(url, self.allowed_hosts)  # an address literal never reaches the resolver
            async with asyncio.timeout(self.timeout):
                async with self.session.post(url, data=body, headers=dict(headers), allow_redirects=False) as answer:
                    if 200 <= answer.status <= 299:
                        return AttemptResult(status=answer.status)
                    excerpt = (await answer.content.read(ANSWER_EXCERPT_BYTES)).decode("utf-8", "replace")
                    return AttemptResult(status=answer.status, error=f"HTTP {answer.status}: {excerpt}".strip())
        except TimeoutError:
            return AttemptResult(error=f"no answer within {self.timeout:g} s")
        except Exception as exc:
            refusal = refusal_in(exc)
            if refusal is not None:
                return AttemptResult(error=str(refusal), refused=True)
            return AttemptResult(error=f"{type(exc).__name__}: {exc}")
