"""``qastream llm-server``: the embedded Ollama-compatible LLM server."""

from __future__ import annotations

import asyncio
import logging

import click
from faust.cli import option

from qastream.app import app, settings
from qastream.devtools.embedded import host_port
from qastream.devtools.llmserver.backends import make_backend
from qastream.devtools.llmserver.server import Faults, OllamaCompatibleServer, serve

_host, _port = host_port(settings.ollama_url, 11434)  # the first server of a list


@app.command(
    option("--backend", type=click.Choice(["smollm2", "echo"]), default="smollm2", show_default=True,
           help="smollm2: real answers from the packaged GGUF model; echo: the question back, instantly."),
    option("--host", default=_host, show_default=True, help="Address to bind."),
    option("--port", type=int, default=_port, show_default=True, help="Port to bind."),
    option("--model", default=settings.ollama_model, show_default=True, help="Model name the server answers to."),
    option("--latency", type=float, default=0.0, show_default=True, help="Extra seconds per answer (echo)."),
    option("--parallel", type=int, default=1, show_default=True, help="Requests served at once (slots)."),
    option("--max-queue", type=int, default=512, show_default=True,
           help="Requests that may wait for a slot; more get 503 (Ollama's OLLAMA_MAX_QUEUE)."),
    option("--threads", type=int, default=2, show_default=True, help="CPU threads per smollm2 slot."),
    option("--fail-503", type=float, default=0.0, show_default=True, help="Share of calls answered 503."),
    option("--fail-429", type=float, default=0.0, show_default=True, help="Share of calls answered 429."),
    option("--fail-404", type=float, default=0.0, show_default=True, help="Share of calls answered 404."),
    option("--fail-mid-stream", type=float, default=0.0, show_default=True,
           help="Share of calls failing inside a 200 stream."),
    option("--retry-after", type=float, default=1.0, show_default=True, help="Retry-After seconds sent with 429."),
    option("--seed", type=int, default=None, help="Seed of the fault draws, for repeatable runs."),
    option("--test-faults", is_flag=True, default=False,
           help="Obey [[fail:CODE*N]] markers in prompts (tests only: a client could type one)."),
    option("--fixed-answer", "fixed_answers", multiple=True, metavar="MODEL=TEXT",
           help="Also answer to MODEL, always with TEXT (repeatable; tests: a second model whose answers differ)."),
)
async def llm_server(self, backend: str, host: str, port: int, model: str, latency: float, parallel: int,
                     max_queue: int, threads: int, fail_503: float, fail_429: float, fail_404: float,
                     fail_mid_stream: float, retry_after: float, seed: int | None,
                     test_faults: bool, fixed_answers: tuple[str, ...]) -> None:
    """Serve the Ollama HTTP API (/api/chat, /api/generate, /api/tags, /api/version)."""
    fixed = dict(pair.split("=", 1) for pair in fixed_answers if "=" in pair)
    if len(fixed) != len(fixed_answers) or any(not name for name in fixed):
        raise click.BadParameter("expected MODEL=TEXT", param_hint="--fixed-answer")
    logging.basicConfig(level=settings.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    loop = asyncio.get_running_loop()
    engine = await loop.run_in_executor(None, lambda: make_backend(backend, latency=latency, slots=parallel,
                                                                    threads=threads))
    faults = Faults(rate_503=fail_503, rate_429=fail_429, rate_404=fail_404, rate_mid_stream=fail_mid_stream,
                    retry_after=retry_after, seed=seed, markers=test_faults)
    server = OllamaCompatibleServer(engine, model=model, parallel=parallel, max_queue=max_queue, faults=faults,
                                    fixed_answers=fixed)
    self.say(f"LLM server ({backend}) on http://{host}:{port}, model {model!r}"
             + "".join(f", model {name!r} (fixed answer)" for name in fixed))
    await serve(server, host, port)
