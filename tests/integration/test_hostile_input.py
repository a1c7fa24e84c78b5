"""Issue 11, bad input and isolation, on a real broker and database (PostgreSQL and SQLite).

Every value that no database or encoder takes is a 400 for its own request,
and a row the database refuses fails only that row: neither the group commit
of POST /query nor the store stage it shares with other questions.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Iterator

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine, text
from stackutil import Worker, wait_until

from qastream.db.queries import CREATED, Submission
from qastream.errors import RowRejected
from qastream.services.storage import Storage

#: (body, fragment of the 400's message): each row was a 503 (or, for NUL on PostgreSQL, a failed batch).
BAD_BODIES = [
    pytest.param(b'{"question_text": "a\\ud800"}', "lone surrogate", id="surrogate-question"),
    pytest.param(b'{"question_text": "q", "original_answer": "a\\ud800"}', "lone surrogate", id="surrogate-reference"),
    pytest.param(b'{"question_text": "a\\u0000b"}', "NUL", id="nul-question"),
    pytest.param(b'{"question_text": "q", "original_answer": "a\\u0000"}', "NUL", id="nul-reference"),
    pytest.param(b"[" * 5000, "nested too deeply", id="deep-nesting"),
    pytest.param(b'{"question_text": "caf\xc3"}', "not UTF-8", id="invalid-utf8"),
    pytest.param(b'{"question_text": ["q"]}', "must be a string", id="wrong-type"),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """Each test runs on both databases; PostgreSQL must be there under CI=true."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/hostile.db"
    else:
        yield request.getfixturevalue("postgres_url")


def rows(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql), params))
    finally:
        engine.dispose()


async def post_all(url: str, bodies: list[bytes]) -> list[tuple[int, dict]]:
    """POST every body at once; (status, JSON body) of each, in order."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def post(body: bytes) -> tuple[int, dict]:
            async with session.post(f"{url}/query", data=body, headers={"Content-Type": "application/json"}) as r:
                return r.status, await r.json()

        return await asyncio.gather(*(post(body) for body in bodies))


def test_bad_input_is_a_400_with_a_message_and_fails_nobody_else(database_url, stack_env, start_worker_process):
    # Admission control would refuse part of 300 concurrent requests with a 503: this test is about
    # the group commit they share, so every one of them is admitted.
    worker = start_worker_process(stack_env, database_url=database_url, max_requests_in_flight="400")
    for param in BAD_BODIES:
        body, fragment = param.values
        status, answer = worker.request("POST", "/query", raw=body)
        assert status == 400 and fragment in answer["error"], (param.id, status, answer)
    # 300 at once, one in ten with a lone surrogate in original_answer: they used to share group
    # commits with the others, and 268 of the 270 legitimate ones were answered 503.
    token = uuid.uuid4().hex[:8]
    bodies, poisoned = [], []
    for i in range(300):
        reference = f"answer {i}\\ud800" if i % 10 == 0 else f"answer {i}"
        bodies.append(f'{{"question_text": "Which part {i} of {token}?", "original_answer": "{reference}"}}'.encode())
        poisoned.append(i % 10 == 0)
    answers = asyncio.run(post_all(worker.url, bodies))
    legit = [(s, a) for (s, a), bad in zip(answers, poisoned) if not bad]
    refused = [(s, a) for (s, a), bad in zip(answers, poisoned) if bad]
    assert [s for s, _ in legit] == [202] * 270, [a for s, a in legit if s != 202][:3]
    assert [s for s, _ in refused] == [400] * 30
    assert all("original_answer contains a lone surrogate" in a["error"] for _, a in refused)
    stored = rows(database_url, "SELECT question_id FROM questions WHERE question_text LIKE :t", t=f"%{token}%")
    assert {r.question_id for r in stored} == {a["question_id"] for _, a in legit}
    code, health = worker.request("GET", "/health")
    assert code == 200 and health["ready"]


def test_group_commit_fails_only_the_rows_the_database_refuses(database_url):
    """Behind the edge's checks: 300 concurrent acceptances, 30 with a value this database refuses."""
    poison = "\x00" if database_url.startswith("postgresql") else "\ud800"

    async def accept_all() -> list[Any]:
        storage = Storage(database_url)
        await storage.start()
        try:
            now = time.time()
            return await asyncio.gather(*(storage.accept(Submission(
                f"{i:016x}", f"question {i}" + (poison if i % 10 == 0 else ""), None, now)) for i in range(300)),
                return_exceptions=True)
        finally:
            await storage.stop()

    outcomes = asyncio.run(accept_all())
    refused = [o for i, o in enumerate(outcomes) if i % 10 == 0]
    accepted = [o for i, o in enumerate(outcomes) if i % 10 != 0]
    assert all(isinstance(o, RowRejected) for o in refused), refused[:3]
    assert all(not isinstance(o, BaseException) and o.kind == CREATED for o in accepted), accepted[:3]
    assert len(rows(database_url, "SELECT question_id FROM questions")) == 270


async def produce(bootstrap: str, topic: str, jobs: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for job in jobs:
            await producer.send_and_wait(topic, key=job["question_id"].encode(), value=json.dumps(job).encode())
    finally:
        await producer.stop()


def answered_job(qid: str, answer: str, model: str = "echo") -> dict[str, Any]:
    """A validated answer as the validate stage sends it, for a question that skipped POST /query."""
    return {"question_id": qid, "question_text": f"Question {qid}?", "original_answer": None, "epoch": 1,
            "attempt": 1, "answer": answer, "model": model, "score": None}


def final_status(worker: Worker, qid: str) -> dict[str, Any]:
    code, body = worker.status(qid)
    return body if code == 200 and body.get("status") in ("completed", "failed") else {}


def test_a_row_the_database_refuses_is_dead_lettered_and_the_store_stage_goes_on(
        database_url, broker, stack_env, start_worker_process):
    """until_written used to retry a refused answer forever, holding up every question behind it."""
    worker = start_worker_process(stack_env, database_url=database_url)
    token = uuid.uuid4().hex[:10]

    def qid(n: int) -> str:
        return f"{token}{n:06x}"

    refused = {qid(1): answered_job(qid(1), "a lone \ud800 surrogate")}
    if database_url.startswith("postgresql"):  # what only PostgreSQL refuses: NUL, a value over its column
        refused[qid(3)] = answered_job(qid(3), "a NUL \x00 here")
        refused[qid(5)] = answered_job(qid(5), "fine", model="m" * 200)
    fine = {qid(n): answered_job(qid(n), f"answer {n}") for n in (0, 2, 4, 6, 7)}
    ordered = [fine.get(qid(n)) or refused.get(qid(n)) for n in range(8)]
    bootstrap = broker.url.removeprefix("kafka://")
    asyncio.run(produce(bootstrap, f"{stack_env['QASTREAM_TOPIC_PREFIX']}validated-responses",
                        [job for job in ordered if job is not None]))
    expected = set(fine) | set(refused)
    wait_until(lambda: all(final_status(worker, q) for q in expected), 90, "every question to end")
    for q in fine:
        assert final_status(worker, q)["status"] == "completed", q
    for q in refused:
        body = final_status(worker, q)
        reason = body["detail"] if body["source"] == "status_table" else body["error"]["message"]
        assert body["status"] == "failed" and "refused to store the answer" in reason, body
    stored = {r.question_id: r for r in rows(
        database_url, "SELECT question_id, status, error_class, error_message FROM questions "
                      "WHERE question_id LIKE :t", t=f"{token}%")}
    assert {q: r.status for q, r in stored.items()} == {**{q: "completed" for q in fine},
                                                         **{q: "failed" for q in refused}}
    assert all(stored[q].error_class == "rejected" for q in refused)
    if database_url.startswith("postgresql"):
        assert "NUL" in stored[qid(3)].error_message
        assert "too long" in stored[qid(5)].error_message
    # And the stage still takes new work.
    later = answered_job(qid(9), "later")
    asyncio.run(produce(bootstrap, f"{stack_env['QASTREAM_TOPIC_PREFIX']}validated-responses", [later]))
    wait_until(lambda: final_status(worker, qid(9)).get("status") == "completed", 60, "a later answer to be stored")
