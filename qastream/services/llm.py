"""The LLM as a Faust service: the official ``ollama`` async client, bounded and timed.

Ollama queues requests server-side and its client waits forever by default,
so a slow model shows up as hung calls, not errors (DESIGN §4).  This client
sets a time-out, bounds the calls in flight per worker, and turns every
failure into an :class:`~qastream.errors.LLMFailure` whose class decides the
route through the graph.  ``Retry-After`` is read from the HTTP response by
an httpx event hook, because ``ollama.ResponseError`` keeps only the body.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass
from typing import Any, Optional

import httpx
import ollama
from mode import Service

from qastream.errors import (
    NO_RESPONSE,
    ErrorClass,
    LLMPermanentError,
    LLMRetryableError,
    classify,
    llm_call_error,
    parse_retry_after,
)
from qastream.telemetry.distribution import Distribution

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = ("You are a concise, accurate assistant. Answer the user's question directly in two to "
                 "four sentences of plain prose.")

#: Headers of the last HTTP response seen by the current task's call.
_last_headers: contextvars.ContextVar[Optional[dict[str, str]]] = contextvars.ContextVar(
    "qastream_llm_last_headers", default=None)


async def _remember_headers(response: httpx.Response) -> None:
    box = _last_headers.get()
    if box is not None:
        box.update({"retry-after": response.headers.get("retry-after", "")})


@dataclass(frozen=True)
class Generation:
    """One answer from the LLM, with what it cost as the server counted it.

    The counts and durations are Ollama's own (``prompt_eval_count``,
    ``eval_count``, ``*_duration`` in nanoseconds); a server that leaves one
    out reads as 0.  ``server`` is the URL of the server that answered, so
    the cost can be told apart per server.
    """

    text: str
    model: str
    latency_ms: float
    tokens: int                        # eval_count: tokens generated
    prompt_tokens: int = 0             # prompt_eval_count: prompt tokens evaluated
    eval_ns: int = 0                   # eval_duration: time generating
    load_ns: int = 0                   # load_duration: time loading the model
    total_ns: int = 0                  # total_duration: the server's whole time on the call
    server: str = ""


class LLMClient(Service):
    """Calls one Ollama-compatible server (:class:`~qastream.services.llm_pool.LLMPool` spreads calls over several)."""

    def __init__(self, url: str, model: str, *, timeout: float, concurrency: int, max_tokens: int,
                 temperature: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.model = model
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self.client: Optional[ollama.AsyncClient] = None
        self.in_flight = 0
        self.calls = 0
        self.failures: dict[str, int] = {}
        # Answered calls and failed calls apart: a time-out's 120 s would
        # otherwise hide the latency of the answers in the percentiles.
        self.latency_ms = Distribution()
        self.error_latency_ms = Distribution()

    async def on_start(self) -> None:
        self.client = ollama.AsyncClient(
            host=self.url, timeout=self.timeout,
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            event_hooks={"response": [_remember_headers]},
        )
        logger.info("LLM client for %s model %s (%d in flight, %.0f s time-out)",
                    self.url, self.model, self.concurrency, self.timeout)

    async def on_stop(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def generate(self, question: str, seed: int | None = None, model: str | None = None) -> Generation:
        """Answer ``question`` with ``model`` (default: the client's), sampling with ``seed``.

        Raises one of :data:`~qastream.errors.LLM_CALL_ERRORS` on any failure.
        """
        assert self.client is not None, "LLM client is not started"
        model = model or self.model
        async with self._slots:
            self.in_flight += 1
            self.calls += 1
            headers: dict[str, str] = {}
            token = _last_headers.set(headers)
            started = time.perf_counter()
            try:
                response = await self.client.chat(
                    model=model,
                    messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
                    options={"num_predict": self.max_tokens, "temperature": self.temperature,
                             **({"seed": seed} if seed is not None else {})},
                    stream=False,
                )
            except Exception as exc:
                error = self._to_error(exc, headers)
                self.failures[error.error_class] = self.failures.get(error.error_class, 0) + 1
                self.error_latency_ms.observe((time.perf_counter() - started) * 1000.0)
                raise error from exc
            finally:
                _last_headers.reset(token)
                self.in_flight -= 1
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.latency_ms.observe(latency_ms)
        return Generation(
            text=(response.message.content or "").strip(),
            model=response.model or model,
            latency_ms=latency_ms,
            tokens=response.eval_count or 0,
            prompt_tokens=response.prompt_eval_count or 0,
            eval_ns=response.eval_duration or 0,
            load_ns=response.load_duration or 0,
            total_ns=response.total_duration or 0,
            server=self.url,
        )

    @staticmethod
    def _to_error(exc: Exception, headers: dict[str, str]) -> LLMRetryableError | LLMPermanentError:
        if isinstance(exc, ollama.ResponseError):
            code = exc.status_code
            retry_after = parse_retry_after(headers.get("retry-after") or None)
            return llm_call_error(classify(code), code, str(exc.error)[:500], retry_after)
        if isinstance(exc, (ConnectionError, httpx.TransportError, asyncio.TimeoutError)):
            return llm_call_error(classify(NO_RESPONSE), NO_RESPONSE, f"{type(exc).__name__}: {exc}"[:500])
        # Anything else (an answer the client cannot parse, a bug) will not heal by retrying.
        return llm_call_error(ErrorClass.PERMANENT, NO_RESPONSE, f"{type(exc).__name__}: {exc}"[:500])

    async def info(self) -> dict[str, Any]:
        """Counts for /metrics."""
        return {"url": self.url, "model": self.model, "in_flight": self.in_flight, "concurrency": self.concurrency,
                "calls": self.calls, "failures_by_class": dict(self.failures),
                "latency_ms": self.latency_ms.percentiles(), "error_latency_ms": self.error_latency_ms.percentiles()}
