"""Live status (``GET /status/{id}/events``) on two workers on Tansu and PostgreSQL, with an LLM taking 1 s a call.

A question's stream is served by the worker owning its partition of the
status table and relayed by the other: each question below is followed on
both at once, and the questions are chosen so that each worker owns some.
Events must arrive in the order of the question's life, none twice, and the
stream must close after the terminal one.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import pytest
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import create_engine, text
from stackutil import POSTGRES_URL, Broker, Worker, isolated_env, launch_llm, launch_worker, require_service, wait_until

from qastream.devtools.embedded import stop
from qastream.policy.ids import question_id
from qastream.settings import Settings

pytestmark = pytest.mark.integration

#: The order of a question's life that passes at its first attempt.
LIFE = ["queued", "generating", "scoring", "completed"]
NEVER_ASKED = "0123456789abcdef"


@dataclass
class Stream:
    """What one ``GET /status/{id}/events`` answered: its status, its events, whether it closed by itself."""

    status: int
    events: list[dict[str, str]] = field(default_factory=list)
    pings: int = 0
    closed: bool = False
    body: object = None

    @property
    def names(self) -> list[str]:
        return [event["event"] for event in self.events]

    @property
    def versions(self) -> list[tuple[int, ...]]:
        return [tuple(int(part) for part in event["id"].split(".")) for event in self.events]


def follow(worker: Worker, qid: str, *, last_event_id: Optional[str] = None, within: float = 60) -> Stream:
    """Read a question's stream until the worker closes it (``closed``) or ``within`` seconds pass."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    request = urllib.request.Request(f"{worker.url}/status/{qid}/events", headers=headers)
    deadline = time.monotonic() + within
    try:
        response = urllib.request.urlopen(request, timeout=within)
    except urllib.error.HTTPError as err:
        payload = err.read()
        return Stream(err.code, body=json.loads(payload) if payload else None)
    stream = Stream(response.status)
    with response:
        if response.status != 200:     # a 204: the client has the last event there is
            return stream
        assert response.headers["Content-Type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        while time.monotonic() < deadline:
            line = response.readline()
            if not line:
                stream.closed = True
                break
            line_text = line.decode("utf-8").rstrip("\r\n")
            if line_text == "":
                if fields:
                    stream.events.append(fields)
                fields = {}
            elif line_text.startswith(":"):
                stream.pings += 1
            else:
                name, _, value = line_text.partition(":")
                fields[name] = value.removeprefix(" ")
    return stream


def partition_of(key: str, partitions: int) -> int:
    return DefaultPartitioner()(key.encode(), list(range(partitions)), list(range(partitions)))


def owners(worker: Worker, app_id: str) -> dict[int, str]:
    """Status-table partition -> URL of the worker owning it, as the router reports."""
    code, body = worker.request("GET", "/router/status/")
    assert code == 200, body
    return {p: url.rstrip("/") for url, parts in body.items() for p in parts.get(f"{app_id}-status-changelog", [])}


@dataclass
class Pair:
    workers: list[Worker]
    app_id: str

    def owner_of(self, qid: str, by_partition: Optional[dict[int, str]] = None) -> Worker:
        """The worker owning ``qid`` (from ``by_partition``, else asking the router)."""
        url = (by_partition or owners(self.workers[0], self.app_id))[partition_of(qid, Settings().partitions_events)]
        return next(w for w in self.workers if w.url.rstrip("/") == url)


@pytest.fixture(scope="module")
def pair(broker: Broker, artifacts: Path, tmp_path_factory) -> Iterator[Pair]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    slow = launch_llm(artifacts, "llm-live", "--parallel", "8", "--latency", "1.0")
    base = tmp_path_factory.mktemp("live")
    env = {**isolated_env(broker, slow, base / "shared"),
           "QASTREAM_DATABASE_URL": f"{POSTGRES_URL}?options=-csearch_path%3D{schema}",
           "QASTREAM_LIVE_PING_SECONDS": "0.5", "QASTREAM_LIVE_MAX_SECONDS": "90"}
    workers: list[Worker] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(launch_worker, artifacts, f"live-{i}", {**env, "QASTREAM_DATA_DIR": str(base / f"w{i}")})
                       for i in range(2)]
            for future in futures:
                if future.exception() is None:
                    workers.append(future.result())
            for future in futures:
                future.result()
        app_id = env["QASTREAM_APP_ID"]

        def split() -> bool:
            if any(w.request("GET", "/health")[0] != 200 for w in workers):
                return False
            return len(set(owners(workers[0], app_id).values())) == 2

        wait_until(split, 120, "both workers to own part of the status table")
        yield Pair(workers, app_id)
    finally:
        for worker in workers:
            worker.stop()
        stop(slow.process, "llm")
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def questions_owned_by_each(pair: Pair, per_worker: int) -> list[str]:
    """Questions whose partitions ``per_worker`` of each worker own."""
    token = uuid.uuid4().hex[:8]
    chosen: dict[str, list[str]] = {w.url: [] for w in pair.workers}
    by_partition = owners(pair.workers[0], pair.app_id)
    for i in range(1000):
        question = f"What does live stream {i} of run {token} say?"
        owned = chosen[pair.owner_of(question_id(question), by_partition).url]
        if len(owned) < per_worker:
            owned.append(question)
        if all(len(q) == per_worker for q in chosen.values()):
            return [q for qs in chosen.values() for q in qs]
    pytest.fail("no questions found for both workers")


def test_events_arrive_in_order_on_either_worker_and_the_stream_closes_after_the_terminal_one(pair):
    questions = questions_owned_by_each(pair, 3)
    with ThreadPoolExecutor(2 * len(questions)) as pool:
        futures = {}
        for question in questions:
            code, body = pair.workers[0].query(question, question)   # the echo answer scores ~1: one attempt
            assert code == 202, body
            qid = body["question_id"]
            owner = pair.owner_of(qid)
            for worker in pair.workers:
                futures[(qid, worker is owner)] = pool.submit(follow, worker, qid)
        streams = {key: future.result() for key, future in futures.items()}
    for (qid, on_owner), stream in streams.items():
        where = f"{qid} on the {'owner' if on_owner else 'other worker, relayed'}"
        assert stream.status == 200, where
        assert stream.closed, f"{where}: still open after the terminal event"
        assert stream.names[-1] == "completed", (where, stream.names)
        # In the order of the question's life, none twice: the first is where it was at connection.
        assert stream.names == LIFE[LIFE.index(stream.names[0]):], (where, stream.names)
        assert stream.names[0] in ("queued", "generating"), (where, stream.names)  # the LLM takes 1 s
        assert stream.versions == sorted(set(stream.versions)), (where, stream.versions)
        final = json.loads(stream.events[-1]["data"])
        assert final["status"] == "completed" and final["result"]["answer"]
        assert final == json.loads(streams[(qid, not on_owner)].events[-1]["data"])  # one owner answered both
        assert stream.pings >= 1, where     # the second of generating was kept alive (a ping every 0.5 s)
    # Each worker served some of the streams and relayed others.
    assert {on_owner for _, on_owner in streams} == {True, False}


def test_a_question_finished_before_the_connection_is_one_terminal_event_then_the_end(pair):
    question = f"What is finished run {uuid.uuid4().hex[:8]}?"
    code, body = pair.workers[1].query(question, question)
    assert code == 202, body
    qid = body["question_id"]
    wait_until(lambda: pair.workers[0].status(qid)[1].get("status") == "completed", 60, f"{qid} completed")
    for worker in pair.workers:
        stream = follow(worker, qid, within=15)
        assert (stream.status, stream.names, stream.closed) == (200, ["completed"], True)
        assert json.loads(stream.events[0]["data"]) == worker.status(qid)[1]
        # Reconnecting after the end: 204, which tells EventSource to stop.
        assert follow(worker, qid, last_event_id=stream.events[0]["id"]).status == 204
        unknown = follow(worker, NEVER_ASKED)
        assert (unknown.status, unknown.body) == worker.status(NEVER_ASKED)
        assert unknown.status == 404
