"""Every answer bounded in time (issue 11): a stalled broker, an unreachable Redis, idle and slow
clients, admission control.  Assertions are about behaviour; time bounds are generous multiples of
the configured time-outs, far from the 30 s hangs they replace."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from sqlalchemy import create_engine, text
from stackutil import Broker, Worker, isolated_env, wait_until

from qastream.devtools.embedded import free_port, log_file, start_tansu, stop, wait_for

pytestmark = pytest.mark.integration


def call(url: str, method: str = "GET", body: Any = None, timeout: float = 30) -> tuple[int, Any, dict, float]:
    """(status, JSON body, headers, seconds taken) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload, headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        status, payload, headers = err.code, err.read(), dict(err.headers)
    return status, json.loads(payload or b"null"), headers, time.monotonic() - started


def health(worker: Worker) -> tuple[int, dict]:
    status, body, _, _ = call(worker.url + "/health", timeout=10)
    return status, body


def launch(artifacts: Path, name: str, env: dict[str, str], ready: Any, **overrides: str) -> Worker:
    """A worker started with ``QASTREAM_<KEY>`` overrides, waited for until ``ready(health body)``.

    Not the fixture's launcher: that one waits for /health 200, which a worker whose Redis is
    unreachable must never answer.
    """
    port = free_port()
    full = {**env, "QASTREAM_WEB_PORT": str(port), "QASTREAM_WEB_HOST": "127.0.0.1",
            **{f"QASTREAM_{k.upper()}": v for k, v in overrides.items()}}
    with log_file(str(artifacts), f"{name}-{port}") as log:  # the child has its own descriptor
        process = subprocess.Popen([sys.executable, "-m", "qastream", "worker", "-l", "info"], env=full,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    worker = Worker(f"http://127.0.0.1:{port}", port, full, process)

    def check() -> bool:
        try:
            return ready(health(worker)[1])
        except (OSError, ValueError):
            return False

    wait_for(check, process, name, timeout=180)
    return worker


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def db_statuses(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return dict(connection.execute(text("SELECT question_id, status FROM questions")).all())
    finally:
        engine.dispose()


def test_stalled_broker_answers_in_bounded_time_health_says_so_and_every_question_ends(
        artifacts, echo_llm, postgres_url, tmp_path, workers):
    """SIGSTOP on the broker: each POST is 202 or 503 with Retry-After within about the enqueue
    time-out, /health turns 503 naming the broker; after SIGCONT every accepted question completes,
    once (the 503'd ones through reconciliation, late sends dropped as stale)."""
    timeout = 2.0
    port = free_port()
    own = Broker(f"kafka://127.0.0.1:{port}", "127.0.0.1", port,
                 start_tansu("127.0.0.1", port, log=log_file(str(artifacts), "tansu-stalled")), artifacts)
    stopped = False
    try:
        env = isolated_env(own, echo_llm, tmp_path / "var")
        worker = launch(artifacts, "stalled-broker", env, lambda body: body.get("ready"),
                        database_url=postgres_url, enqueue_timeout_seconds=str(timeout),
                        reconcile_after_seconds="3", reconcile_interval_seconds="1",
                        health_interval_seconds="0.5", health_timeout_seconds="0.5")
        workers.append(worker)
        token = uuid.uuid4().hex[:8]
        code, body, _, _ = call(worker.url + "/query", "POST", {"question_text": f"Warm-up {token}?"})
        assert code == 202, body

        own.process.send_signal(signal.SIGSTOP)
        stopped = True
        questions = [{"question_text": f"What does stalled part {i} of {token} do?"} for i in range(12)]
        with ThreadPoolExecutor(len(questions)) as pool:
            answers = list(pool.map(lambda q: call(worker.url + "/query", "POST", q, timeout=60), questions))
        for code, body, headers, seconds in answers:
            assert code in (202, 503), body
            if code == 503:
                assert int(headers["Retry-After"]) >= 1
            assert seconds < 2 * timeout + 1, f"answered {code} after {seconds:.1f} s"
        print(f"stalled broker: {sorted(a[0] for a in answers)}, slowest {max(a[3] for a in answers):.2f} s")
        assert 503 in {a[0] for a in answers}  # the broker did stall the producer

        stored = [body["question_id"] for _, body, _, _ in answers]  # a 503 after storing names the question
        code, _, _, seconds = call(worker.url + f"/status/{stored[-1]}", timeout=60)
        assert code in (200, 503) and seconds < 2 * timeout + 1  # answered from the table, or bounded
        wait_until(lambda: health(worker)[0] == 503 and "broker" in health(worker)[1]["down"], 15,
                   "/health to report the broker down")
        status, body = health(worker)
        assert body["dependencies"]["broker"].startswith("unreachable")
        code, _, _, seconds = call(worker.url + "/metrics", timeout=60)
        assert code == 200 and seconds < 10, f"/metrics answered {code} after {seconds:.1f} s"

        own.process.send_signal(signal.SIGCONT)
        stopped = False
        wait_until(lambda: health(worker)[0] == 200, 60, "/health to recover after SIGCONT")
        wait_until(lambda: set(db_statuses(postgres_url).values()) == {"completed"}, 120,
                   "every accepted question to complete after the broker resumed")
        statuses = db_statuses(postgres_url)
        assert len(statuses) == len(questions) + 1  # every POST's question was stored, none twice
        engine = create_engine(postgres_url)
        with engine.connect() as connection:
            responses = connection.execute(text("SELECT COUNT(*), COUNT(DISTINCT question_id) FROM responses")).one()
        engine.dispose()
        assert tuple(responses) == (len(statuses), len(statuses))
    finally:
        if stopped:
            own.process.send_signal(signal.SIGCONT)
        for worker in workers:
            worker.stop()
        workers.clear()
        stop(own.process, "tansu-stalled")


class Blackhole:
    """A port that completes TCP handshakes (the kernel does) and never answers: a hung Redis."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port = self.socket.getsockname()[1]

    def close(self) -> None:
        self.socket.close()


@pytest.mark.parametrize("kind", ["refused", "blackholed"])
def test_unreachable_redis_answers_without_the_cache_and_health_names_it(
        kind, broker, echo_llm, artifacts, tmp_path, workers):
    with ExitStack() as stack:
        if kind == "blackholed":
            hole = Blackhole()
            stack.callback(hole.close)
            port = hole.port
        else:
            port = free_port()
        env = isolated_env(broker, echo_llm, tmp_path / "var")
        worker = launch(artifacts, f"redis-{kind}", env,
                        lambda body: body.get("recovered") and body.get("assigned") and body["down"] == ["redis"],
                        redis_url=f"redis://127.0.0.1:{port}/0", database_url=f"sqlite:///{tmp_path}/r.db")
        workers.append(worker)
        status, body = health(worker)
        assert status == 503 and body["down"] == ["redis"]
        assert body["dependencies"]["redis"].startswith("unreachable")
        token = uuid.uuid4().hex[:8]
        for i in range(5):
            question = {"question_text": f"Is part {i} of {token} cached?", "original_answer": "No."}
            code, answer, _, seconds = call(worker.url + "/query", "POST", question)
            assert code == 202, answer
            assert seconds < 10, f"POST took {seconds:.1f} s with Redis {kind}"
        qid = answer["question_id"]
        wait_until(lambda: worker.status(qid)[1].get("status") == "completed", 60, "an answer without Redis")
        code, again, _, _ = call(worker.url + "/query", "POST", question)
        assert (code, again["source"]) == (200, "database")
        assert call(worker.url + "/metrics")[0] == 200


def open_idle(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sockets.append(sock)
    return sockets


def start_slow_post(port: int) -> socket.socket:
    """A POST /query that declares a body and sends only part of it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"question_text\": ")
    return sock


def read_status(sock: socket.socket) -> Optional[int]:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_idle_and_slow_clients_do_not_stop_others_and_admission_sheds_the_excess(
        broker, echo_llm, artifacts, tmp_path, workers):
    limit = 4
    env = isolated_env(broker, echo_llm, tmp_path / "var")
    worker = launch(artifacts, "slow-clients", env, lambda body: body.get("ready"),
                    database_url=f"sqlite:///{tmp_path}/s.db", max_requests_in_flight=str(limit),
                    body_timeout_seconds="3", idle_timeout_seconds="4")
    workers.append(worker)
    token = uuid.uuid4().hex[:8]
    idle = open_idle(worker.port, 500)
    try:
        code, body, _, _ = call(worker.url + "/query", "POST", {"question_text": f"Served beside idlers {token}?"})
        assert code == 202, body

        slow = [start_slow_post(worker.port) for _ in range(limit)]
        wait_until(lambda: health(worker)[1]["admission"]["in_flight"] == limit, 10,
                   "the slow requests to fill the admission gate")
        refused = [call(worker.url + "/query", "POST", {"question_text": f"Shed {i} {token}?"}) for i in range(3)]
        for code, body, headers, _ in refused:
            assert code == 503 and int(headers["Retry-After"]) >= 1, body
        assert call(worker.url + f"/status/{'0' * 16}")[0] == 503  # /status is gated too
        assert health(worker)[0] == 200  # /health and /metrics are not
        assert call(worker.url + "/metrics")[0] == 200

        assert [read_status(sock) for sock in slow] == [408] * limit  # body time-out frees the slots
        for sock in slow:
            sock.close()
        code, body, _, _ = call(worker.url + "/query", "POST", {"question_text": f"Admitted again {token}?"})
        assert code == 202, body
        assert health(worker)[1]["admission"]["refused"] >= 4

        slowloris = socket.create_connection(("127.0.0.1", worker.port), timeout=30)
        idle.append(slowloris)
        slowloris.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        for sock in [*idle[:5], slowloris]:  # the idle time-out closes connections with no request
            sock.settimeout(30)
            assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()


class PausableProxy:
    """A TCP proxy to PostgreSQL that can stop forwarding: a database host that hangs.

    While paused, bytes are held (the kernel still acknowledges them, as with a hung server) and new
    connections are accepted but not connected upstream.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.running = threading.Event()
        self.running.set()
        self.closed = False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self.running.wait()
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        for source, target in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                self.running.wait()
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            # Each socket is the source of exactly one pump, which closes it; the other pump's
            # sendall to it then fails with OSError, which ends that pump too.
            source.close()

    def close(self) -> None:
        self.closed = True
        self.running.set()
        self.listener.close()


def test_hung_database_answers_in_bounded_time_health_names_it_and_questions_end(
        broker, echo_llm, artifacts, postgres_url, tmp_path, workers):
    db_timeout = 2.0
    proxy = PausableProxy(("127.0.0.1", 5432))
    try:
        env = isolated_env(broker, echo_llm, tmp_path / "var")
        via_proxy = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        worker = launch(artifacts, "hung-database", env, lambda body: body.get("ready"), database_url=via_proxy,
                        db_statement_timeout_seconds=str(db_timeout), db_connect_timeout_seconds="2",
                        reconcile_after_seconds="3", reconcile_interval_seconds="1",
                        health_interval_seconds="0.5", health_timeout_seconds="0.5")
        workers.append(worker)
        token = uuid.uuid4().hex[:8]
        proxy.running.clear()
        questions = [{"question_text": f"Does hung part {i} of {token} answer?"} for i in range(6)]
        with ThreadPoolExecutor(len(questions)) as pool:
            answers = list(pool.map(lambda q: call(worker.url + "/query", "POST", q, timeout=60), questions))
        for code, body, headers, seconds in answers:
            assert code == 503 and int(headers["Retry-After"]) >= 1, body
            assert seconds < 2 * db_timeout + 1, f"answered {code} after {seconds:.1f} s"
        wait_until(lambda: "database" in health(worker)[1]["down"], 15, "/health to report the database down")
        code, _, _, seconds = call(worker.url + "/metrics")
        assert code in (200, 503) and seconds < 2 * db_timeout + 1  # answers, without hanging on the database

        proxy.running.set()
        wait_until(lambda: health(worker)[0] == 200, 60, "/health to recover with the database")
        for question in questions:  # what the hung database accepted late is processed; the rest now
            code, body, _, _ = call(worker.url + "/query", "POST", question)
            assert code in (200, 202), body
        wait_until(lambda: len(db_statuses(postgres_url)) == len(questions)
                   and set(db_statuses(postgres_url).values()) == {"completed"}, 120,
                   "every question to complete once the database answers again")
    finally:
        proxy.running.set()
        for worker in workers:
            worker.stop()
        workers.clear()
        proxy.close()


def test_a_blackholed_database_host_fails_a_connection_within_the_connect_timeout():
    """Before issue 11 a connection to a host that never answers held its request ~2 minutes."""
    from sqlalchemy.exc import OperationalError

    from qastream.services.storage import make_engine

    hole = Blackhole()
    engine = make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{hole.port}/test", connect_timeout=2,
                         statement_timeout=2.0)
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="timeout"):
            engine.connect()
        assert time.monotonic() - started < 2 * 2 + 1
    finally:
        engine.dispose()
        hole.close()
