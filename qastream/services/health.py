"""Probing the broker, the database and Redis in the background, for ``GET /health``.

Readiness must tell the truth when a dependency stalls: a worker whose
broker is stopped answered ``/health`` 200 for 20 s and more, because
nothing in the check asked the broker.  Asking it inside the request would
make ``/health`` as slow as the stalled dependency, so a timer probes each
dependency every ``health_interval_seconds`` with a ``health_timeout_seconds``
bound (a metadata request, ``SELECT 1``, ``PING``) and keeps the results;
``/health`` reads them and answers at once.  A result older than a few
intervals counts as down too: a probe that stopped reporting proves nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Optional

from mode import Service

from qastream.services.cache import Cache
from qastream.services.storage import Storage
from qastream.streaming.topic_admin import bootstrap_servers

logger = logging.getLogger(__name__)

OK = "ok"
#: Intervals without a result after which a dependency counts as down.
STALE_INTERVALS = 3


@dataclass(frozen=True)
class Probe:
    """The outcome of one probe of one dependency."""

    ok: bool
    detail: str
    at: float  # time.monotonic() when the probe ended


def dependency_states(probes: Mapping[str, Optional[Probe]], now: float, max_age: float) -> dict[str, str]:
    """``"ok"`` or the reason a dependency is down, for each probed dependency.

    A dependency never probed, or whose last result is older than
    ``max_age`` seconds, is down: readiness must be earned, not assumed.
    """
    states = {}
    for name, probe in probes.items():
        if probe is None:
            states[name] = "not probed yet"
        elif now - probe.at > max_age:
            states[name] = f"no probe result for {now - probe.at:.1f} s"
        else:
            states[name] = OK if probe.ok else probe.detail
    return states


def describe_failure(exc: BaseException, timeout: float) -> str:
    """A short reason for a failed probe."""
    if isinstance(exc, TimeoutError):
        return f"unreachable: no answer within {timeout:g} s"
    return f"unreachable: {type(exc).__name__}: {exc}"[:300]


class DependencyProbe(Service):
    """Probes the broker, the database and (when configured) Redis on a timer."""

    def __init__(self, broker_url: str, storage: Storage, cache: Cache, *, interval: float, timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.broker_url = broker_url
        self.storage = storage
        self.cache = cache
        self.interval = interval
        self.timeout = timeout
        self._kafka: Any = None
        self.probes: dict[str, Callable[[], Awaitable[None]]] = {"broker": self._broker, "database": storage.ping}
        if cache.backend == "redis":
            self.probes["redis"] = cache.ping
        self.results: dict[str, Optional[Probe]] = {name: None for name in self.probes}

    def states(self) -> dict[str, str]:
        """What ``GET /health`` shows, from the latest results."""
        return dependency_states(self.results, time.monotonic(), self.interval * STALE_INTERVALS + self.timeout)

    async def probe_all(self) -> None:
        """Probe every dependency at once, each within ``timeout``."""
        await asyncio.gather(*(self._probe(name, probe) for name, probe in self.probes.items()))

    async def _probe(self, name: str, probe: Callable[[], Awaitable[None]]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await probe()
        except Exception as exc:
            result = Probe(False, describe_failure(exc, self.timeout), time.monotonic())
            if name == "broker":
                await self._drop_kafka()  # a fresh connection next time, not one queued behind a stalled reply
        else:
            result = Probe(True, OK, time.monotonic())
        previous = self.results.get(name)
        if previous is None or previous.ok != result.ok:
            log = logger.info if result.ok else logger.warning
            log("health: %s is %s", name, result.detail)
        self.results[name] = result

    async def _broker(self) -> None:
        """A metadata request for no topic, answered by any broker of the cluster: the answer stays small."""
        from aiokafka.client import AIOKafkaClient
        from aiokafka.errors import KafkaConnectionError, KafkaError
        from aiokafka.protocol.metadata import MetadataRequest

        if self._kafka is None:
            self._kafka = AIOKafkaClient(bootstrap_servers=bootstrap_servers(self.broker_url),
                                         client_id="qastream-health",
                                         request_timeout_ms=max(1, int(self.timeout * 1000)))
            await self._kafka.bootstrap()
        nodes = [broker.nodeId for broker in self._kafka.cluster.brokers()]
        random.shuffle(nodes)
        failure: KafkaError = KafkaConnectionError("no broker in the cluster metadata")
        for node in nodes:
            try:
                await self._kafka.send(node, MetadataRequest([]))
                return
            except KafkaError as exc:  # one broker down is not the cluster down: ask the next
                failure = exc
        raise failure

    async def _drop_kafka(self) -> None:
        client, self._kafka = self._kafka, None
        if client is not None:
            try:
                async with asyncio.timeout(self.timeout):
                    await client.close()
            except Exception as exc:
                logger.debug("closing the broker probe's client failed: %r", exc)

    @Service.task
    async def _probing(self) -> None:
        while not self.should_stop:
            await self.probe_all()
            await self.sleep(self.interval)

    async def on_stop(self) -> None:
        await self._drop_kafka()
