"""Several LLM servers behind one client: least-busy routing, a breaker per server, 404 fallback.

Real deployments run several Ollama servers (one per GPU box).  The pool
holds one :class:`~qastream.services.llm.LLMClient` per server, each with its
own ``concurrency`` slots, and sends every call to the server that
:func:`~qastream.policy.servers.pick_server` chooses: the least busy one
whose circuit breaker lets a call out, not the one the question last failed
on when another may take it.  A server whose breaker opens is drained for its
cool-down while the others carry the load; its probe goes out with a real
call when the cool-down ends.

A 404 "model not found" means this server lacks the model, not that the
question is wrong: the call goes to each other server that may take a call
before the failure is returned (and dead-lettered), and the server is passed
over for that model while another can serve it.

The breakers live on the worker's runtime (renewed at every start), read
through ``health``; the pool holds only clients and counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Optional, Sequence

from mode import Service

from qastream.errors import (
    LLM_CALL_ERRORS,
    NO_RESPONSE,
    ErrorClass,
    LLMPermanentError,
    LLMRetryableError,
    llm_call_error,
    signals_outage,
)
from qastream.policy.breaker import CLOSED
from qastream.policy.servers import Candidate, ServerHealth, pick_server, pool_state
from qastream.services.llm import Generation, LLMClient
from qastream.telemetry.distribution import Distribution

logger = logging.getLogger(__name__)

#: The status code of a server that lacks the model asked for.
MODEL_NOT_FOUND = 404


class LLMPool(Service):
    """One client per LLM server; each call goes to the server the routing policy picks."""

    def __init__(self, urls: Sequence[str], model: str, *, timeout: float, concurrency: int, max_tokens: int, temperature: float,
                 missing_model_seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.concurrency = concurrency
        self.clients = [LLMClient(url, model, timeout=timeout, concurrency=concurrency, max_tokens=max_tokens,
                                  temperature=temperature) for url in urls]
        #: The servers' health, in the order of ``urls``: ``app.runtime.llm_servers`` once the app exists.
        self.health: Callable[[], Sequence[ServerHealth]] = lambda: ()
        #: How long a server that answered 404 for a model is passed over for it.
        self.missing_model_seconds = missing_model_seconds
        #: Calls in flight or waiting for a slot, per server.
        self.load = [0] * len(self.clients)
        # All servers together, answered and failed apart (as each client keeps them for itself).
        self.latency_ms = Distribution()
        self.error_latency_ms = Distribution()

    def on_init_dependencies(self) -> list[LLMClient]:
        """The clients start and stop with the pool."""
        return self.clients

    @property
    def urls(self) -> list[str]:
        return [client.url for client in self.clients]

    def up(self) -> bool:
        """Is some server's breaker closed?  Then a call needs no probe: the pool picks a server at call time."""
        return any(server.breaker.state == CLOSED for server in self.health())

    def take_probe(self) -> Optional[int]:
        """With no breaker closed, the server whose due probe the caller now carries (``None`` if none is due).

        Taken when the question is admitted, as with one server: one
        question carries the probe and the others go on waiting, instead of
        all of them taking slots only to find the probe gone.
        """
        for index, server in enumerate(self.health()):
            if server.breaker.would_allow():
                server.breaker.allow()
                return index
        return None

    def release(self, probe: Optional[int]) -> None:
        """Give back a probe taken with :meth:`take_probe` whose call will not go out (the question was cancelled)."""
        if probe is not None:
            self.health()[probe].breaker.release()

    def wait_time(self) -> float:
        """Seconds until some server may take a call (0 when one may now)."""
        return min(server.breaker.wait_time() for server in self.health())

    def breaker_state(self) -> str:
        """The breaker state of the LLM as a whole (:func:`~qastream.policy.servers.pool_state`)."""
        return pool_state([server.breaker.state for server in self.health()])

    def choose(self, model: str, avoid: Optional[str], tried: set[int]) -> Optional[int]:
        """The server for the next call of ``model``, never one already ``tried`` for it; ``None`` if none may."""
        servers = self.health()
        now = servers[0].breaker.clock()
        candidates = [Candidate(i, self.load[i], self.clients[i].calls, server.breaker.would_allow(),
                                preferred=server.url != avoid and not server.lacks(model, now))
                      for i, server in enumerate(servers) if i not in tried]
        return pick_server(candidates)

    async def generate(self, question: str, seed: Optional[int] = None, *, model: Optional[str] = None,
                       avoid: Optional[str] = None, probe: Optional[int] = None) -> Generation:
        """Answer ``question`` with ``model`` on the server the policy picks, away from ``avoid`` if it can, or on
        server ``probe`` first when the caller carries its probe (:meth:`take_probe`).

        Raises one of :data:`~qastream.errors.LLM_CALL_ERRORS` with ``server``
        (the server that failed) and ``outage`` (its breaker was or went
        open) set.  With every breaker open, an ``overload`` failure of no
        server, counted as an outage.
        """
        model = model or self.model
        servers = self.health()
        tried: set[int] = set()
        failure: Optional[LLMRetryableError | LLMPermanentError] = None
        while True:
            index = probe if probe is not None and not tried else self.choose(model, avoid, tried)
            if index is None:
                if failure is not None:  # a 404 from every server that could take the call
                    raise failure
                error = llm_call_error(ErrorClass.OVERLOAD, NO_RESPONSE, "every LLM server's circuit breaker is open")
                error.outage = True
                raise error
            server = servers[index]
            if index != probe:
                server.breaker.allow()  # takes the probe of a breaker whose cool-down is over
            tried.add(index)
            self.load[index] += 1
            started = time.perf_counter()
            try:
                generation = await self.clients[index].generate(question, seed, model)
            except LLM_CALL_ERRORS as err:
                self.error_latency_ms.observe((time.perf_counter() - started) * 1000.0)
                err.server = server.url
                if signals_outage(err.status_code):
                    err.outage = server.breaker.record_failure()
                else:
                    server.breaker.record_success()  # the server answered (busy, quota, 4xx): it is up
                if err.status_code != MODEL_NOT_FOUND:
                    raise
                server.missing[model] = server.breaker.clock() + self.missing_model_seconds
                logger.warning("LLM server %s has no model %s: trying the other servers", server.url, model)
                failure = err
                continue
            except asyncio.CancelledError:
                server.breaker.release()  # a probe that will never report must not block the next one
                raise
            finally:
                self.load[index] -= 1
            server.breaker.record_success()
            self.latency_ms.observe(generation.latency_ms)
            return generation

    async def info(self) -> dict[str, Any]:
        """Counts for /metrics: all servers together, and each server with its breaker."""
        servers = self.health()
        each = []
        for client, health, load in zip(self.clients, servers, self.load):
            figures = await client.info()
            each.append({**figures, "waiting": max(0, load - client.in_flight), "breaker": health.breaker.snapshot(),
                         "missing_models": sorted(health.missing)})
        failures: dict[str, int] = {}
        for server in each:
            for error_class, n in server["failures_by_class"].items():
                failures[error_class] = failures.get(error_class, 0) + n
        return {"url": ",".join(self.urls), "model": self.model, "in_flight": sum(s["in_flight"] for s in each),
                "concurrency": self.concurrency * len(self.clients), "calls": sum(s["calls"] for s in each),
                "failures_by_class": failures, "latency_ms": self.latency_ms.percentiles(),
                "error_latency_ms": self.error_latency_ms.percentiles(), "servers": each}
