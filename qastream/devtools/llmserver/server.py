"""An aiohttp server that speaks the Ollama HTTP API, so the production client code is what runs.

It behaves like a local Ollama where it matters to qastream: ``parallel``
requests are served at once per model, up to ``max_queue`` more wait, and
beyond that the server answers 503 "server busy"; an unknown model is a 404.
It can serve several models, each a backend of its own under its own name:
the request's ``model`` picks one, as it picks a loaded model in Ollama; tests
add models that always answer a fixed text (``--fixed-answer MODEL=TEXT``) to
tell which model wrote an answer.  Fault knobs
inject 503, 429 (with ``Retry-After``), 404 and mid-stream errors at given
rates, and, only when started with ``--test-faults``, a ``[[fail:CODE*N]]``
marker in a prompt fails exact calls.  The markers stay off by default
because a client could type one: in the main job (``make run``) a question
containing ``[[fail:404]]`` is just text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

from aiohttp import web

from qastream.devtools.llmserver.backends import Backend, Completion

logger = logging.getLogger(__name__)

VERSION = "0.6.0-qastream"

#: ``[[fail:503*2]]`` in a prompt makes the first two calls with that prompt
#: fail with 503; ``[[fail:404]]`` fails every call.  Tests use it to inject
#: exact faults per question, on a server started with ``--test-faults``.
FAULT_MARKER = re.compile(r"\[\[fail:(\d{3}|mid)(?:\*(\d+))?\]\]")


def strip_markers(text: str) -> str:
    """The text without fault markers."""
    return FAULT_MARKER.sub("", text).strip()


@dataclass
class Faults:
    """Rates of injected failures (0..1 each), the Retry-After sent with 429, and whether prompt markers count."""

    rate_503: float = 0.0
    rate_429: float = 0.0
    rate_404: float = 0.0
    rate_mid_stream: float = 0.0
    retry_after: Optional[float] = 1.0
    seed: Optional[int] = None
    markers: bool = False


def durations(completion: Completion, elapsed_ns: int) -> dict[str, int]:
    """Ollama's duration fields (ns) of a completion that took ``elapsed_ns`` in the backend.

    As Ollama counts them: ``total_duration`` covers loading (done before the
    call here, reported by the call that first used the model), prompt
    evaluation and generation; a backend that does not split its time has
    spent all of it generating.
    """
    prompt_ns = min(completion.prompt_ns, elapsed_ns)
    eval_ns = completion.eval_ns or max(0, elapsed_ns - prompt_ns)
    return {"total_duration": elapsed_ns + completion.load_ns, "load_duration": completion.load_ns,
            "prompt_eval_duration": prompt_ns, "eval_duration": eval_ns}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def model_aliases(model: str) -> set[str]:
    """The names a request may use for ``model``: with its tag, without it, and with ``:latest``.

    Ollama resolves ``smollm2`` to ``smollm2:latest``; the embedded server also
    accepts the bare name of a tagged model (``gemma3`` for ``gemma3:270m``)
    when no other served model claims it (:func:`alias_table`).
    """
    base = model.split(":", 1)[0]
    return {model, base, f"{base}:latest"}


def alias_table(names: Sequence[str]) -> dict[str, str]:
    """Which served model each accepted name reaches.

    A model's own name always reaches it; an alias shared by two models
    (``gemma3`` beside ``gemma3:270m`` and ``gemma3:1b``) reaches neither, as
    guessing would answer with the wrong model.  Two names Ollama treats as one
    (``smollm2`` and ``smollm2:latest``) are a ``ValueError``.
    """
    canonical = {name: name if ":" in name else f"{name}:latest" for name in names}
    if len(set(canonical.values())) != len(names):
        raise ValueError(f"two served models have the same name: {', '.join(names)}")
    owners: dict[str, set[str]] = {}
    for name in names:
        for alias in model_aliases(name):
            owners.setdefault(alias, set()).add(name)
    table = {alias: next(iter(claimed)) for alias, claimed in owners.items() if len(claimed) == 1}
    for name in names:
        table[name] = table[canonical[name]] = name
    return table


def model_not_found(model: str) -> str:
    """Ollama's error for a model it does not have."""
    return f"model '{model}' not found"


@dataclass(frozen=True)
class ServedModel:
    """A backend and the model name requests use to reach it."""

    name: str
    backend: Backend


class _Lane:
    """One served model's parallel slots: each model generates ``parallel`` answers at once, as in Ollama."""

    def __init__(self, model: ServedModel, parallel: int) -> None:
        self.model = model
        self.slots = asyncio.Semaphore(parallel)


class OllamaCompatibleServer:
    """The request handling; :func:`build_app` wires it into aiohttp."""

    def __init__(self, models: Sequence[ServedModel], *, parallel: int, max_queue: int, faults: Faults) -> None:
        if not models:
            raise ValueError("the server needs at least one model")
        self.models = list(models)
        lanes = {model.name: _Lane(model, parallel) for model in self.models}
        self._lanes = {alias: lanes[name] for alias, name in alias_table([m.name for m in self.models]).items()}
        self.parallel = parallel
        self.max_queue = max_queue
        self.faults = faults
        self._random = random.Random(faults.seed)
        self._waiting = 0
        self._marker_calls: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()

    # -- faults -------------------------------------------------------------------
    def _injected(self, prompt: str) -> Optional[str]:
        """The fault to inject for this call: an HTTP status as text, ``mid``, or ``None``."""
        marker = FAULT_MARKER.search(prompt) if self.faults.markers else None
        if marker:
            self._marker_calls[prompt] += 1
            limit = marker.group(2)
            if limit is None or self._marker_calls[prompt] <= int(limit):
                return marker.group(1)
        draw = self._random.random()
        for fault, rate in (("503", self.faults.rate_503), ("429", self.faults.rate_429),
                            ("404", self.faults.rate_404), ("mid", self.faults.rate_mid_stream)):
            if draw < rate:
                return fault
            draw -= rate
        return None

    def _error(self, status: int, message: str) -> web.Response:
        self.stats[f"error_{status}"] += 1
        headers = {}
        if status == 429 and self.faults.retry_after is not None:
            headers["Retry-After"] = f"{self.faults.retry_after:g}"
        return web.json_response({"error": message}, status=status, headers=headers)

    # -- handlers -----------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        # Every call that reached the server, answered or not: tests count the calls a worker started
        # (a cancelled question must start none).
        self.stats["received"] += 1
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return self._error(400, "invalid JSON body")
        if not isinstance(body, dict):
            return self._error(400, "body must be a JSON object")
        model = body.get("model", "")
        lane = self._lanes.get(model) if isinstance(model, str) else None
        if lane is None:
            return self._error(404, model_not_found(str(model)))
        if chat:
            messages = body.get("messages") or []
            if not isinstance(messages, list):
                return self._error(400, "messages must be a list")
        else:
            messages = [{"role": "system", "content": body.get("system", "")},
                        {"role": "user", "content": body.get("prompt", "")}]
        prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        fault = self._injected(prompt)
        if self.faults.markers:
            # A marker steers the test, it is never part of what the model reads.
            messages = [{**m, "content": strip_markers(str(m.get("content", "")))} if isinstance(m, dict) else m
                        for m in messages]
        if fault == "503":
            return self._error(503, "server busy, please try again.  maximum pending requests exceeded")
        if fault == "429":
            return self._error(429, "rate limit exceeded, retry later")
        if fault == "404":
            return self._error(404, model_not_found(model))
        if fault is not None and fault != "mid":
            return self._error(int(fault), f"injected error {fault}")
        if lane.slots.locked() and self._waiting >= self.max_queue:
            # Every slot is busy and the queue is full: Ollama's OLLAMA_MAX_QUEUE behaviour.
            return self._error(503, "server busy, please try again.  maximum pending requests exceeded")
        self._waiting += 1
        try:
            await lane.slots.acquire()
        finally:
            self._waiting -= 1
        try:
            started = time.perf_counter_ns()
            completion = await lane.model.backend.complete(messages, body.get("options") or {})
            elapsed = time.perf_counter_ns() - started
        finally:
            lane.slots.release()
        self.stats["completions"] += 1
        self.stats[f"completions:{model}"] += 1
        stream = body.get("stream", True)
        if fault == "mid":
            if not stream:
                # Without streaming, Ollama reports a failure during generation as a 500.
                return self._error(500, "an error was encountered while running the model")
            return await self._mid_stream_error(request, model, chat, completion)
        final = self._final(model, chat, completion, elapsed)
        if not stream:
            return web.json_response(final)
        return await self._stream(request, model, chat, completion, final)

    def _chunk(self, model: str, chat: bool, text: str) -> dict[str, Any]:
        chunk: dict[str, Any] = {"model": model, "created_at": _now(), "done": False}
        if chat:
            chunk["message"] = {"role": "assistant", "content": text}
        else:
            chunk["response"] = text
        return chunk

    def _final(self, model: str, chat: bool, completion: Completion, elapsed_ns: int) -> dict[str, Any]:
        final = self._chunk(model, chat, completion.text)
        final.update(done=True, done_reason="stop", **durations(completion, elapsed_ns),
                     prompt_eval_count=completion.prompt_tokens, eval_count=completion.tokens)
        return final

    async def _stream(self, request: web.Request, model: str, chat: bool, completion: Completion,
                      final: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for word in completion.text.split(" "):
            await response.write((json.dumps(self._chunk(model, chat, word + " ")) + "\n").encode())
        empty = {**final, **({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})}
        await response.write((json.dumps(empty) + "\n").encode())
        await response.write_eof()
        return response

    async def _mid_stream_error(self, request: web.Request, model: str, chat: bool,
                                completion: Completion) -> web.StreamResponse:
        """Ollama reports an error during generation as an error line inside a 200 stream."""
        self.stats["error_mid_stream"] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        first = completion.text.split(" ")[0] if completion.text else ""
        await response.write((json.dumps(self._chunk(model, chat, first)) + "\n").encode())
        await response.write((json.dumps({"error": "an error was encountered while running the model"}) + "\n")
                             .encode())
        await response.write_eof()
        return response

    async def tags(self, request: web.Request) -> web.Response:
        """Every served model, by the name Ollama would list it under (a bare name gets ``:latest``)."""
        listed = []
        for model in self.models:
            base, _, tag = model.name.partition(":")
            name = f"{base}:{tag or 'latest'}"
            listed.append({"name": name, "model": name, "modified_at": _now(), "size": 0,
                           "digest": "qastream-embedded", "details": {"format": "gguf", "family": base}})
        return web.json_response({"models": listed})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def admin_stats(self, request: web.Request) -> web.Response:
        """Counts of calls received, completions (in all and ``completions:<model>``) and injected errors (not part
        of the Ollama API)."""
        return web.json_response({**self.stats, "waiting": self._waiting})


def build_app(server: OllamaCompatibleServer) -> web.Application:
    """The aiohttp application serving ``server``."""
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_get("/", server.root)
    app.router.add_post("/api/chat", server.chat)
    app.router.add_post("/api/generate", server.generate)
    app.router.add_get("/api/tags", server.tags)
    app.router.add_get("/api/version", server.version)
    app.router.add_get("/admin/stats", server.admin_stats)
    return app


async def serve(server: OllamaCompatibleServer, host: str, port: int) -> None:
    """Serve until cancelled."""
    runner = web.AppRunner(build_app(server), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    logger.info("Ollama-compatible server on http://%s:%d (models %s)", host, port,
                ", ".join(model.name for model in server.models))
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
