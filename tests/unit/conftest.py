"""Fixtures shared by unit tests: a migrated SQLite database, an Ollama-compatible echo server."""

import pytest
from aiohttp.test_utils import TestServer

from qastream.db.migrate import upgrade
from qastream.devtools.llmserver.backends import EchoBackend
from qastream.devtools.llmserver.server import Faults, OllamaCompatibleServer, build_app
from qastream.services.storage import make_engine


@pytest.fixture(autouse=True)
def fresh_runtime():
    """Every test starts with a fresh worker state (counters, breaker, gate), as a worker does."""
    from qastream.app import app  # here, not at the top: collecting the pure-function tests stays cheap

    app.runtime = app.runtime_factory()
    yield app.runtime


@pytest.fixture
def engine(tmp_path):
    """A SQLite database in tmp_path with qastream's schema, migrated by Alembic."""
    engine = make_engine(f"sqlite:///{tmp_path}/t.db")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def llm_server():
    """Start an Ollama-compatible echo server on 127.0.0.1 with an ephemeral port.

    ``await llm_server(latency=..., parallel=..., max_queue=..., faults=Faults(...))`` returns
    ``(server, base_url)``; every server started is closed after the test.
    """
    started = []

    async def start(*, latency=0.0, parallel=4, max_queue=64, faults=None, model="smollm2"):
        server = OllamaCompatibleServer(EchoBackend(latency), model=model, parallel=parallel, max_queue=max_queue,
                                        faults=faults or Faults(markers=True))
        http = TestServer(build_app(server), host="127.0.0.1")
        await http.start_server()
        started.append(http)
        return server, f"http://127.0.0.1:{http.port}"

    yield start
    for http in started:
        await http.close()
