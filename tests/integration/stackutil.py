"""Helpers shared by the integration tests: a worker handle and polling."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.protocol.metadata import MetadataRequest

from qastream.devtools.embedded import (
    free_port,
    http_ok,
    log_file,
    start_llm_server,
    start_tansu,
    start_worker,
    stop,
    wait_for,
)
from qastream.policy.webhooks import DELIVERY_HEADER
from qastream.streaming import faust_fixes

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
POSTGRES_URL = os.environ.get("QASTREAM_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("QASTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")




@dataclass
class Worker:
    """A running ``qastream worker`` process and its HTTP API."""

    url: str
    port: int
    env: dict[str, str]
    process: subprocess.Popen
    command: list[str] = field(default_factory=list)

    def request(self, method: str, path: str, body: Any = None, *, raw: Optional[bytes] = None,
                content_type: str = "application/json", timeout: float = 30) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            payload = err.read()
            try:
                return err.code, json.loads(payload)
            except ValueError:
                return err.code, payload.decode(errors="replace")

    def query(self, question: str, reference: Optional[str] = None) -> tuple[int, Any]:
        body: dict[str, Any] = {"question_text": question}
        if reference is not None:
            body["original_answer"] = reference
        return self.request("POST", "/query", body)

    def status(self, question_id: str) -> tuple[int, Any]:
        return self.request("GET", f"/status/{question_id}")

    def stop(self, *, hard: bool = False) -> None:
        stop(self.process, f"worker {self.port}", hard=hard)



def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _reachable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def missing(message: str) -> None:
    """A prerequisite is missing: skip locally, fail under CI=true (CI must not pass by skipping)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI requires it")
    pytest.skip(message)


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a service is missing, except under CI=true where that is a failure."""
    if not _reachable(host, port):
        missing(f"{name} is not reachable on {host}:{port}")


@dataclass
class Broker:
    url: str
    host: str
    port: int
    process: subprocess.Popen
    log_dir: Path

    def restart(self) -> None:
        """Stop Tansu and start it again, empty (memory storage)."""
        stop(self.process, "tansu")
        self.process = start_tansu(self.host, self.port, log=log_file(str(self.log_dir), "tansu"))


@dataclass
class LLMServer:
    url: str
    process: subprocess.Popen


def launch_llm(artifacts: Path, name: str, *extra: str) -> LLMServer:
    port = free_port()
    process = start_llm_server("127.0.0.1", port, backend="echo", model="smollm2", extra=["--test-faults", *extra],
                               log=log_file(str(artifacts), name))
    return LLMServer(f"http://127.0.0.1:{port}", process)


def isolated_env(broker: Broker, llm: LLMServer, data_dir: Path) -> dict[str, str]:
    """Environment of a worker isolated from every other test."""
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QASTREAM_")}
    env.update({
        "QASTREAM_APP_ID": f"qastream-test-{tag}",
        "QASTREAM_TOPIC_PREFIX": f"t{tag}-",
        "QASTREAM_BROKER_URL": broker.url,
        "QASTREAM_OLLAMA_URL": llm.url,
        "QASTREAM_DATA_DIR": str(data_dir),
        "QASTREAM_LLM_TIMEOUT_SECONDS": "20",
        "QASTREAM_SCORER_THREADS": "1",
    })
    return env


def submit(worker: Worker, questions: list[tuple[str, str]]) -> list[str]:
    """POST /query each (question, reference) pair; the question ids, each accepted with a 202."""
    ids = []
    for question, reference in questions:
        code, body = worker.query(question, reference)
        assert code == 202, body
        ids.append(body["question_id"])
    return ids


def launch_worker(artifacts: Path, test_name: str, env: dict[str, str], *, faust_cli: bool = False,
                  **overrides: str) -> Worker:
    """Start a worker on a free port with ``env`` plus ``QASTREAM_<KEY>`` overrides."""
    port = free_port()
    full = {**env, "QASTREAM_WEB_PORT": str(port), "QASTREAM_WEB_HOST": "127.0.0.1",
            **{f"QASTREAM_{k.upper()}": v for k, v in overrides.items()}}
    name = f"{test_name}-worker-{port}".replace("/", "_").replace("[", "_").replace("]", "")
    log = log_file(str(artifacts), name)
    if faust_cli:
        # The documented Faust form, run exactly as a user would type it.
        command = [str(Path(sys.executable).parent / "faust"), "-A", "qastream.app", "worker", "-l", "info"]
        with log:  # the child has its own descriptor
            process = subprocess.Popen(command, env=full, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/health"), process, name, timeout=180)
    else:
        process = start_worker(full, web_host="127.0.0.1", web_port=port, log=log)
    return Worker(f"http://127.0.0.1:{port}", port, full, process)


@contextmanager
def broker_auto_creation() -> Iterator[None]:
    """aiokafka's own metadata requests, which ask the broker to auto-create the topics they name.

    Creating the app installs qastream's fix that turns auto-creation off for
    the whole process (qastream.streaming.faust_fixes), and the test process
    creates the app as soon as a test imports it.  A test that stands in for
    a client without that fix (a broker-created topic) restores the original
    for its own calls only.
    """
    patched = MetadataRequest.__init__
    MetadataRequest.__init__ = faust_fixes.original_metadata_request_init
    try:
        yield
    finally:
        MetadataRequest.__init__ = patched


async def read_events(broker: Broker, topic: str) -> list[dict[str, Any]]:
    """Every record on ``topic`` up to its end offsets, decoded from JSON (the status events of a run, in
    partition order: each event's ``at`` is the worker's clock when it happened)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=f"{broker.host}:{broker.port}", enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        events: list[dict[str, Any]] = []
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=5000)
            assert batches, f"no records from {remaining} before their end offsets {ends}"
            for tp, records in batches.items():
                events.extend(json.loads(r.value) for r in records)
                if records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return events
    finally:
        await consumer.stop()


@dataclass
class Arrival:
    path: str
    delivery: str
    attempt: int
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


class WebhookReceiver:
    """An aiohttp server on 127.0.0.1 in a thread of its own; it records every request.

    ``/flaky`` answers 500 to the first three requests of each delivery id
    and 200 after; ``/dead`` always 500; ``/hang`` never answers.
    """

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.runner: web.AppRunner
        self.release: asyncio.Event
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.release = asyncio.Event()
        application = web.Application()
        application.router.add_route("POST", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(application, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        delivery = request.headers.get(DELIVERY_HEADER, "")
        with self.lock:
            earlier = sum(1 for a in self.arrivals if a.delivery == delivery)
        status = {"/flaky": 500 if earlier < 3 else 200, "/dead": 500}.get(request.path, 200)
        with self.lock:
            self.arrivals.append(Arrival(request.path, delivery, int(request.headers.get("X-Qastream-Attempt", 0)),
                                         dict(request.headers), body, status, time.time()))
        if request.path == "/hang":
            await self.release.wait()  # until the test ends: longer than any time-out
        return web.Response(status=status, text="receiver says no" if status >= 300 else "ok")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def of(self, delivery: str) -> list[Arrival]:
        with self.lock:
            return [a for a in self.arrivals if a.delivery == delivery]

    def received(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(10), "the receiver did not start"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.release.set)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
