"""What one worker holds in memory while it runs: counters, registries, the breakers, the gates, live streams.

Everything a worker counts or remembers about itself lives on one
:class:`Runtime`, owned by the app (``app.runtime``), created with it and
renewed when a worker starts; nothing of it is a module global set at import.
Views, agents, ``/metrics`` and Prometheus read it from ``app.runtime`` at
the moment they need it, so a fresh runtime (a worker start, a unit test)
replaces all of it at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Coroutine, Optional

from qastream.policy.admission import Gate
from qastream.policy.breaker import CircuitBreaker
from qastream.policy.keycache import KeyCache
from qastream.policy.priority import PriorityGate
from qastream.policy.servers import ServerHealth
from qastream.settings import Settings
from qastream.streaming.watchers import Watchers
from qastream.telemetry.counters import WorkerCounts
from qastream.telemetry.tokens import TokenCounts

#: Accepted questions being produced at once by this worker; the rest wait their turn here.
#: With one record per producer batch (the development profile), aiokafka wakes every send
#: waiting on a partition each time its batch drains, and only one of them gets in: with
#: hundreds of requests in flight the worker spent its CPU on those wake-ups and acceptance
#: fell from ~1,000 to ~300 req/s (bench/acceptance.py, 1,000 req/s offered).  This queue
#: wakes one waiter per free slot.  With multi-record batches a slot is held for microseconds.
ENQUEUE_SLOTS = 32


@dataclass
class Runtime:
    """The in-memory state of one worker since it started."""

    #: Each LLM server's health (its circuit breaker, models it lacks), in ``QASTREAM_OLLAMA_URL`` order.
    llm_servers: tuple[ServerHealth, ...]
    #: The admission gate of ``POST /query`` and ``GET /status``.
    gate: Gate
    #: The worker's LLM slots, interactive questions first (both generate agents take them here).
    llm_slots: PriorityGate
    #: Questions that waited because every LLM server's breaker was open.
    llm_held: int = 0
    #: When this runtime was created: the worker's start, for ``uptime_seconds``.
    started: float = field(default_factory=time.time)
    #: What ``POST /query`` did (cache, database, in_flight, accepted, time-outs).
    query_counts: Counter[str] = field(default_factory=Counter)
    #: Undecodable messages seen, by topic.
    poison_counts: Counter[str] = field(default_factory=Counter)
    #: What the stages did: outcomes, dead letters, retries, latencies, scores.
    counts: WorkerCounts = field(default_factory=WorkerCounts)
    #: Tokens and generation time the LLM reported for this worker's calls, by model and server.
    tokens: TokenCounts = field(default_factory=TokenCounts)
    #: Webhook attempts this worker made by outcome (``delivered``, ``retried``, ``failed``), and ``deferred``:
    #: deliveries that found no free slot for their host and waited one time-out.
    webhook_counts: Counter[str] = field(default_factory=Counter)
    #: (table name, question or delivery id) -> due time of a parked retry already released and not yet unparked.
    released: dict[tuple[str, str], float] = field(default_factory=dict)
    #: Question id -> (version, time sent) of a finished question whose expiry event is not yet applied.
    expiring: dict[str, tuple[list[int], float]] = field(default_factory=dict)
    #: When this worker last found (and re-created) topics the broker had lost; 0 when never.
    topics_lost_at: float = 0.0
    #: The last consumer lag the lag timer took (``telemetry.lag.consumer_lag``); ``None`` before the first.
    consumer_lag: Optional[dict[str, Any]] = None
    #: When it was taken, epoch seconds.
    consumer_lag_at: float = 0.0
    #: Slots for producing accepted questions (see :data:`ENQUEUE_SLOTS`).
    enqueue_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(ENQUEUE_SLOTS))
    #: Work a request started and does not wait for (enqueueing a batch's questions): held so it is not
    #: collected before it ends.
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Recent API key lookups (``qastream.db.keys.Lookup`` by key hash) and uses recorded.
    keys: KeyCache[Any] = field(default_factory=lambda: KeyCache(0.0))
    #: (question id, epoch, attempt, retries) of the generations this worker has started and not finished.
    generating: set[tuple[str, int, int, int]] = field(default_factory=set)
    #: Live status streams open on this worker, by question, for ``track`` to notify (``GET /status/{id}/events``).
    watchers: Watchers = field(default_factory=lambda: Watchers(Settings().live_max_streams))

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` after the request that started it has answered; held until it ends.

        ``work`` must handle its own failures: nothing awaits the task.
        """
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """A fresh runtime with the breakers, gates and slots ``settings`` configure.

        The LLM slots are ``llm_concurrency`` per server: each server takes that
        many calls, so the worker may have that many in flight on each.
        """
        urls = settings.llm_urls()
        servers = tuple(ServerHealth(url, CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_seconds,
                                                         settings.breaker_max_cooldown_seconds, name=url))
                        for url in urls)
        return cls(llm_servers=servers, gate=Gate(settings.max_requests_in_flight),
                   llm_slots=PriorityGate(settings.llm_slots()),
                   keys=KeyCache(settings.auth_cache_seconds), watchers=Watchers(settings.live_max_streams))
