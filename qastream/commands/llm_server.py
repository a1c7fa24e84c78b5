"""``qastream llm-server``: the embedded Ollama-compatible LLM server."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from typing import Optional, Sequence

import click
from faust.cli import option

from qastream.app import app, settings
from qastream.devtools.embedded import host_port
from qastream.devtools.llmserver.backends import MODEL_NAMES, BackendName, FixedAnswerBackend, make_backend
from qastream.devtools.llmserver.server import Faults, OllamaCompatibleServer, ServedModel, alias_table, serve

_host, _port = host_port(settings.ollama_url, 11434)  # the first server of a list


def parse_backends(ctx: click.Context, param: click.Parameter, value: str) -> list[BackendName]:
    """``smollm2,gemma3`` as backend names, each once; a usage error names the bad one."""
    names = [part.strip() for part in value.split(",") if part.strip()]
    try:
        backends = [BackendName(name) for name in names]
    except ValueError:
        raise click.BadParameter(f"{value!r}: each backend is one of "
                                 f"{', '.join(b.value for b in BackendName)}") from None
    if not backends or len(set(backends)) != len(backends):
        raise click.BadParameter(f"{value!r}: name one or more backends, each once")
    return backends


def parse_fixed_answers(pairs: Sequence[str]) -> dict[str, str]:
    """``--fixed-answer MODEL=TEXT`` options as model name -> text."""
    fixed = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    if len(fixed) != len(pairs) or any(not name for name in fixed):
        raise click.BadParameter("expected MODEL=TEXT", param_hint="--fixed-answer")
    return fixed


def model_names(backends: Sequence[BackendName], models: Optional[str], configured: str,
                also: Sequence[str] = ()) -> list[str]:
    """The model name of each backend: ``--model``'s comma-separated list, in the order of ``--backend``.

    Without ``--model`` the first backend answers to the configured
    ``QASTREAM_OLLAMA_MODEL``, which the worker asks for, and every other one
    to its own name (:data:`MODEL_NAMES`).  Checked, with the names of the
    fixed-answer models (``also``), before any model loads.
    """
    if models is None:
        names = [configured, *(MODEL_NAMES[backend] for backend in backends[1:])]
    else:
        names = [part.strip() for part in models.split(",")]
        if len(names) != len(backends) or not all(names):
            raise click.BadParameter(f"{models!r}: give one model name per backend ({len(backends)})",
                                     param_hint="--model")
    try:
        alias_table([*names, *also])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    return names


@app.command(
    option("--backend", "backends", default=BackendName.SMOLLM2.value, show_default=True, callback=parse_backends,
           help="Comma-separated backends, each served under its own model name: smollm2 and gemma3 generate "
                "real answers with packaged GGUF models; echo answers with the question, instantly."),
    option("--host", default=_host, show_default=True, help="Address to bind."),
    option("--port", type=int, default=_port, show_default=True, help="Port to bind."),
    option("--model", "models", default=None,
           help="Comma-separated model names, one per backend. Default: QASTREAM_OLLAMA_MODEL "
                f"({settings.ollama_model}) for the first backend, then "
                + ", ".join(f"{name} for {backend.value}" for backend, name in MODEL_NAMES.items()) + "."),
    option("--latency", type=float, default=0.0, show_default=True, help="Extra seconds per answer (echo)."),
    option("--parallel", type=int, default=1, show_default=True, help="Requests served at once per model (slots)."),
    option("--max-queue", type=int, default=512, show_default=True,
           help="Requests that may wait for a slot; more get 503 (Ollama's OLLAMA_MAX_QUEUE)."),
    option("--threads", type=int, default=2, show_default=True, help="CPU threads per smollm2 or gemma3 slot."),
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
async def llm_server(self, backends: list[BackendName], host: str, port: int, models: Optional[str], latency: float,
                     parallel: int, max_queue: int, threads: int, fail_503: float, fail_429: float,
                     fail_404: float, fail_mid_stream: float, retry_after: float, seed: int | None,
                     test_faults: bool, fixed_answers: tuple[str, ...]) -> None:
    """Serve the Ollama HTTP API (/api/chat, /api/generate, /api/tags, /api/version)."""
    logging.basicConfig(level=settings.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    try:
        fixed = parse_fixed_answers(fixed_answers)
        names = model_names(backends, models, settings.ollama_model, also=list(fixed))
    except click.BadParameter as exc:
        # A usage message and exit code 2, not the traceback an exception inside a Faust command prints.
        self.say(f"error: {exc.format_message()}", file=sys.stderr)
        raise SystemExit(2) from None
    loop = asyncio.get_running_loop()
    served = []
    for backend, name in zip(backends, names):
        engine = await loop.run_in_executor(None, functools.partial(make_backend, backend, latency=latency,
                                                                    slots=parallel, threads=threads))
        served.append(ServedModel(name, engine))
    served += [ServedModel(name, FixedAnswerBackend(text, latency)) for name, text in fixed.items()]
    faults = Faults(rate_503=fail_503, rate_429=fail_429, rate_404=fail_404, rate_mid_stream=fail_mid_stream,
                    retry_after=retry_after, seed=seed, markers=test_faults)
    server = OllamaCompatibleServer(served, parallel=parallel, max_queue=max_queue, faults=faults)
    described = ", ".join([*(f"{name!r} ({backend.value})" for backend, name in zip(backends, names)),
                           *(f"{name!r} (fixed answer)" for name in fixed)])
    self.say(f"LLM server on http://{host}:{port}, models {described}")
    await serve(server, host, port)
