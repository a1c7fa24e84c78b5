"""Fixtures that run the real stack: Tansu, the echo LLM server, PostgreSQL, Redis and workers.

Each test gets its own app id (consumer group), topic prefix and PostgreSQL
schema, so tests never see each other's messages or rows.  PostgreSQL and
Redis are the machine's services; when one is missing the test is skipped
locally but fails under ``CI=true``, so CI cannot pass by skipping.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
from stackutil import (
    ARTIFACTS,
    POSTGRES_URL,
    REDIS_URL,
    Broker,
    LLMServer,
    Worker,
    isolated_env,
    launch_llm,
    launch_worker,
    require_service,
)

from qastream.devtools.embedded import free_port, log_file, start_tansu, stop


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def broker(artifacts: Path) -> Iterator[Broker]:
    port = free_port()
    process = start_tansu("127.0.0.1", port, log=log_file(str(artifacts), "tansu"))
    handle = Broker(f"kafka://127.0.0.1:{port}", "127.0.0.1", port, process, artifacts)
    yield handle
    stop(handle.process, "tansu")


@pytest.fixture(scope="session")
def echo_llm(artifacts: Path) -> Iterator[LLMServer]:
    server = launch_llm(artifacts, "llm-echo", "--parallel", "64", "--latency", "0.05")
    yield server
    stop(server.process, "llm server")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


WorkerFactory = Callable[..., Worker]


@pytest.fixture
def stack_env(broker: Broker, echo_llm: LLMServer, tmp_path: Path) -> dict[str, str]:
    return isolated_env(broker, echo_llm, tmp_path / "var")


@pytest.fixture
def start_worker_process(artifacts: Path, request: pytest.FixtureRequest) -> Iterator[WorkerFactory]:
    """Start workers with ``factory(env, **overrides)``; all are stopped after the test."""
    started: list[Worker] = []

    def factory(env: dict[str, str], *, faust_cli: bool = False, **overrides: str) -> Worker:
        worker = launch_worker(artifacts, request.node.name, env, faust_cli=faust_cli, **overrides)
        started.append(worker)
        return worker

    yield factory
    for worker in started:
        worker.stop()
