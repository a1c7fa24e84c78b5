"""An aiohttp server that speaks the Ollama HTTP API, so the production client code is what runs.

It behaves like a local Ollama where it matters to qastream: ``parallel``
requests are served at once, up to ``max_queue`` more wait, and beyond that
the server answers 503 "server busy"; an unknown model is a 404.  Besides
its model it can answer to further model names with a fixed text each
(``--fixed-answer MODEL=TEXT``), so tests tell which model wrote an answer.  Fault knobs
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
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Optional

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


def _model_names(model: str) -> set[str]:
    base = model.split(":", 1)[0]
    return {model, base, f"{base}:latest"}


class OllamaCompatibleServer:
    """The request handling; :func:`build_app` wires it into aiohttp."""

    def __init__(self, backend: Backend, *, model: str, parallel: int, max_queue: int, faults: Faults,
                 fixed_answers: Optional[dict[str, str]] = None) -> None:
        self.backend = backend
        self.model = model
        #: Further model names this server answers to, each always with its fixed text (a test aid: with the
        #: echo backend, a model whose answer matches a reference scores high where the echo scores low).
        self.fixed_answers = {name: text for model_name, text in (fixed_answers or {}).items()
                              for name in _model_names(model_name)}
        self.names = _model_names(model) | set(self.fixed_answers)
        self.parallel = parallel
        self.max_queue = max_queue
        self.faults = faults
        self._random = random.Random(faults.seed)
        self._slots = asyncio.Semaphore(parallel)
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
        if model not in self.names:
            return self._error(404, f'model "{model}" not found, try pulling it first')
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
            return self._error(404, f'model "{model}" not found, try pulling it first')
        if fault is not None and fault != "mid":
            return self._error(int(fault), f"injected error {fault}")
        if self._slots.locked() and self._waiting >= self.max_queue:
            # Every slot is busy and the queue is full: Ollama's OLLAMA_MAX_QUEUE behaviour.
            return self._error(503, "server busy, please try again.  maximum pending requests exceeded")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            started = time.perf_counter_ns()
            completion = await self.backend.complete(messages, body.get("options") or {})
            elapsed = time.perf_counter_ns() - started
        finally:
            self._slots.release()
        if model in self.fixed_answers:
            text = self.fixed_answers[model]
            completion = replace(completion, text=text, tokens=len(text.split()))
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
        bases = dict.fromkeys(name.split(":", 1)[0] for name in (self.model, *self.fixed_answers))
        return web.json_response({"models": [{
            "name": f"{base}:latest", "model": f"{base}:latest", "modified_at": _now(), "size": 0,
            "digest": "qastream-embedded", "details": {"format": "gguf", "family": base},
        } for base in bases]})

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
    logger.info("Ollama-compatible server on http://%s:%d (model %s)", host, port, server.model)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
