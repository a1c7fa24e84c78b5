"""``qastream dev``: the whole stack on one machine with nothing installed but this package.

Starts Tansu (memory storage) where ``QASTREAM_BROKER_URL`` points, the
embedded LLM server where ``QASTREAM_OLLAMA_URL`` points, and one worker;
waits until the API answers, prints its URL, and on Ctrl-C stops the worker,
then the LLM server, then the broker.
"""

from __future__ import annotations

import asyncio
import os
import signal

import click
from faust.cli import option

from qastream.app import app, settings
from qastream.commands.llm_server import model_names, parse_backends
from qastream.devtools.embedded import host_port, log_file, start_llm_server, start_tansu, start_worker, stop
from qastream.devtools.llmserver.backends import BackendName


@app.command(
    # SmolLM2 alone by default: Gemma 3 270M passed the quality gate less often on the calibration sample
    # (docs/quality.md, "Two models"), so it is not worth its load time and memory in every `make run`.
    option("--llm-backend", "llm_backends", default=BackendName.SMOLLM2.value, show_default=True,
           callback=parse_backends,
           help="Comma-separated backends of each embedded LLM server (echo, smollm2, gemma3): the first answers "
                "to QASTREAM_OLLAMA_MODEL, the others to their own names (gemma3:270m)."),
    option("--llm-parallel", type=int, default=1, show_default=True, help="LLM requests served at once per model."),
)
async def dev(self, llm_backends: list[BackendName], llm_parallel: int) -> None:
    """Run the embedded stack: Tansu broker, LLM server and a worker on http://WEB_HOST:WEB_PORT."""
    logs = os.path.join(settings.data_dir, "logs")
    broker_host, broker_port = host_port(settings.broker_url, 9092)
    names = model_names(llm_backends, None, settings.ollama_model)
    served = ", ".join(f"{backend.value} as {name!r}" for backend, name in zip(llm_backends, names))
    env = {**os.environ, "QASTREAM_BROKER_PROFILE": os.environ.get("QASTREAM_BROKER_PROFILE", "development")}
    started = []
    try:
        self.say(f"starting Tansu on {broker_host}:{broker_port} (logs in {logs}/)")
        started.append(("broker", start_tansu(broker_host, broker_port, log=log_file(logs, "tansu"))))
        for number, url in enumerate(settings.llm_urls()):  # one embedded server per QASTREAM_OLLAMA_URL entry
            llm_host, llm_port = host_port(url, 11434)
            self.say(f"starting the LLM server ({served}) on {llm_host}:{llm_port}")
            started.append(("LLM server", start_llm_server(
                llm_host, llm_port, backend=",".join(b.value for b in llm_backends), model=",".join(names),
                extra=["--parallel", str(llm_parallel)],
                log=log_file(logs, "llm-server" if number == 0 else f"llm-server-{number + 1}"), env=env)))
        self.say("starting the worker (loads the scorer model; a few seconds)")
        started.append(("worker", start_worker(env, web_host=settings.web_host, web_port=settings.web_port,
                                               log=log_file(logs, "worker"))))
        self.say(f"qastream is ready: dashboard at http://{settings.web_host}:{settings.web_port}/  "
                 f"(Ctrl-C stops everything)")
        await _until_signal(started)
    finally:
        for name, process in reversed(started):
            self.say(f"stopping {name}")
            stop(process, name)


async def _until_signal(children) -> None:
    """Wait for SIGINT/SIGTERM, or for a child to exit on its own."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    while not stopping.is_set():
        for name, process in children:
            if process.poll() is not None:
                raise click.ClickException(f"{name} exited with code {process.returncode}; see its log")
        try:
            await asyncio.wait_for(stopping.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            pass
