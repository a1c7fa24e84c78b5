"""The Faust app: settings, services, topics; agents and views are discovered.

``faust -A qastream.app worker -l info`` and the ``qastream`` console script
(:func:`main`) both run this app.  Importing it does no I/O: services connect
in their ``on_start`` when a worker starts.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Callable, Iterable

import faust
from mode import ServiceT
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from qastream.policy.access import AuthMode
from qastream.runtime import Runtime
from qastream.services.cache import make_cache
from qastream.services.health import DependencyProbe
from qastream.services.limiter import Limiter
from qastream.services.llm_pool import LLMPool
from qastream.services.scorer import Scorer
from qastream.services.storage import Storage
from qastream.services.webhooks import WebhookClient
from qastream.settings import Settings
from qastream.streaming import faust_fixes
from qastream.streaming.broker import faust_options
from qastream.streaming.poison import QAStreamTopic
from qastream.streaming.recovery_seek import SeekFenceFlowControl
from qastream.streaming.topic_admin import ensure_topics
from qastream.streaming.worker import QAStreamWorker
from qastream.topics import Topics


class QAStreamApp(faust.App):
    """A Faust app whose own services start before its agents and web views.

    Services registered with ``@app.service`` start only after table
    recovery and after the web server, so an agent or a request could reach
    a database that is not connected yet.  These start first instead.
    """

    def __init__(self, *args: Any, first_services: Iterable[ServiceT] = (), idle_timeout: float = 75.0,
                 fetch_max_wait: float | None = None,
                 runtime_factory: Callable[[], Runtime] = lambda: Runtime.from_settings(Settings()),
                 **kwargs: Any) -> None:
        # The fixes must be in place before Faust creates a consumer or a web view, and nothing that
        # merely imports a qastream module should patch the library: creating the app installs them.
        faust_fixes.install()
        super().__init__(*args, **kwargs)
        #: Makes the worker's in-memory state (:class:`~qastream.runtime.Runtime`): with the app, and anew at start.
        self.runtime_factory = runtime_factory
        self.runtime = runtime_factory()
        self.first_services = list(first_services)
        self.topic_layout: dict[str, int] = {}
        self.idle_timeout = idle_timeout
        #: Longest the broker may hold a fetch (faust_fixes.create_worker_consumer); ``None`` keeps Faust's 1.5 s.
        self.fetch_max_wait = fetch_max_wait
        #: ``QASTREAM_LOG_LEVEL``: the level :class:`~qastream.streaming.worker.QAStreamWorker` uses when ``-l`` is not given.
        self.log_level: str | None = None
        #: ``QASTREAM_AUTH`` and ``QASTREAM_AUTH_ALLOW_ANONYMOUS``, for the worker's check of its bind address.
        self.auth_mode = AuthMode.OFF
        self.allow_anonymous = False

    def _new_web(self) -> Any:
        web = super()._new_web()
        # Faust offers no option for the aiohttp server's idle time-out (keepalive_timeout, which also
        # closes a connection that never sends a request); its runner passes these to the server.
        web._runner._kwargs["keepalive_timeout"] = self.idle_timeout  # type: ignore[attr-defined]
        return web

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        """Faust's flow control, ending the hold of the seek after a rebalance (:mod:`~qastream.streaming.recovery_seek`)."""
        return SeekFenceFlowControl(self, loop=self.loop)

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        return [*self.first_services, *super().on_init_dependencies()]

    async def on_first_start(self) -> None:
        # Faust creates the datadir itself but not its parents (QASTREAM_DATA_DIR).
        Path(self.conf.datadir).parent.mkdir(parents=True, exist_ok=True)
        self.runtime = self.runtime_factory()  # counters and uptime start with the worker, not the import
        if self.topic_layout:
            await ensure_topics(";".join(str(url) for url in self.conf.broker), self.topic_layout)
        await super().on_first_start()

    async def on_started(self) -> None:
        await super().on_started()
        quiet_garbage_collector()


#: Allocations between young-generation collections (CPython's default is 700).
GC_THRESHOLD = (20_000, 50, 100)


def quiet_garbage_collector() -> None:
    """Keep CPython's cyclic collector from pausing a started worker for tens of milliseconds.

    What exists once the worker has started (modules, the scorer model, Faust's
    services) lives as long as the process, yet every full collection walked
    it again: ~160,000 objects, 85-125 ms with the event loop stopped, seen as
    the slowest POST /query answers (bench/acceptance.py).  Frozen, they are
    never walked again; a higher first threshold makes collections of the
    short-lived records and events rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


settings = Settings.from_env()

storage = Storage(settings.resolved_database_url(), connect_timeout=settings.db_connect_timeout_seconds,
                  statement_timeout=settings.db_statement_timeout_seconds)
cache = make_cache(settings.redis_url, settings.cache_ttl_seconds, timeout=settings.redis_timeout_seconds,
                   retry_seconds=settings.cache_retry_seconds, max_bytes=settings.cache_max_bytes)
# Per-API-key rate limits, shared through the cache's Redis and bounded by the same time-outs.
limiter = Limiter(settings.redis_url, timeout=settings.redis_timeout_seconds, retry_seconds=settings.cache_retry_seconds)
llm = LLMPool(
    settings.llm_urls(), settings.ollama_model, timeout=settings.llm_timeout_seconds,
    concurrency=settings.llm_concurrency, max_tokens=settings.llm_max_tokens, temperature=settings.llm_temperature,
    # A server that lacks a model is asked again as often as a broken one is probed at the longest.
    missing_model_seconds=settings.breaker_max_cooldown_seconds,
)
scorer = Scorer(
    enabled=settings.scorer_enabled, model=settings.scorer_model, layer=settings.scorer_layer,
    threads=settings.scorer_threads, batch_size=settings.scorer_batch_size,
)
webhook_client = WebhookClient(timeout=settings.webhook_timeout_seconds, concurrency=settings.webhook_concurrency,
                               host_concurrency=settings.webhook_host_concurrency,
                               allowed_hosts=settings.webhook_hosts())
dependencies = DependencyProbe(settings.broker_url, storage, cache, interval=settings.health_interval_seconds,
                               timeout=settings.health_timeout_seconds)

app = QAStreamApp(
    settings.app_id,
    first_services=[storage, cache, limiter, llm, scorer, webhook_client, dependencies],
    idle_timeout=settings.idle_timeout_seconds,
    fetch_max_wait=settings.fetch_max_wait_seconds,
    runtime_factory=lambda: Runtime.from_settings(settings),
    autodiscover=["qastream.tables", "qastream.agents", "qastream.web", "qastream.commands"],
    origin="qastream",
    Worker=QAStreamWorker,
    **faust_options(settings),
)
app.log_level = settings.log_level
# The LLM servers' breakers are the runtime's, renewed at each worker start: the pool reads them through the app.
llm.health = lambda: app.runtime.llm_servers
app.auth_mode, app.allow_anonymous = AuthMode(settings.auth), settings.auth_allow_anonymous
topics = Topics(app, settings)
app.topic_layout = topics.layout()
QAStreamTopic.dead_letter_topic = topics.permanent


def main() -> None:
    """Entry point of the ``qastream`` console script (Faust's CLI plus qastream's commands)."""
    app.main()
