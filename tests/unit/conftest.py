"""Fixtures shared by unit tests: a migrated SQLite database, an Ollama-compatible echo server."""

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from qastream.db.migrate import upgrade
from qastream.devtools.llmserver.backends import EchoBackend, FixedAnswerBackend
from qastream.devtools.llmserver.server import Faults, OllamaCompatibleServer, ServedModel, build_app
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
    ``(server, base_url)``; ``models=[ServedModel(...), ...]`` serves those instead of one echo model
    called ``model``, and ``fixed_answers={name: text}`` adds models that always answer their text.
    Every server started is closed after the test.
    """
    started = []

    async def start(*, latency=0.0, parallel=4, max_queue=64, faults=None, model="smollm2", models=None,
                    fixed_answers=None):
        served = list(models) if models is not None else [ServedModel(model, EchoBackend(latency))]
        served += [ServedModel(name, FixedAnswerBackend(text, latency)) for name, text in (fixed_answers or {}).items()]
        server = OllamaCompatibleServer(served, parallel=parallel, max_queue=max_queue,
                                        faults=faults or Faults(markers=True))
        http = TestServer(build_app(server), host="127.0.0.1")
        await http.start_server()
        started.append(http)
        return server, f"http://127.0.0.1:{http.port}"

    yield start
    for http in started:
        await http.close()


@pytest.fixture(scope="session")
def web_app():
    """The app's aiohttp application with Faust's blueprints applied, as the worker's web server has it."""
    from qastream.app import app

    app.web.init_server()
    return app.web.web_app


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def client(web_app):
    """A client of the app's web application.  One for the session: the application binds to the first
    event loop that serves it, so every test module that uses it runs on the session's loop."""
    async with TestClient(TestServer(web_app)) as c:
        yield c
