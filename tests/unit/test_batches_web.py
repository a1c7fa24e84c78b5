"""/batches and DELETE /query in the worker's real aiohttp application, on a SQLite database and no broker.

``storage`` runs its real statements on a SQLite file; what would reach the
broker (:func:`enqueue_bulk`, the cancel events) is recorded instead.
"""

from __future__ import annotations

import dataclasses
import json
import time
from unittest.mock import AsyncMock

import pytest
from sqlalchemy import func, select

import qastream.tables.parking  # noqa: F401  (the tables, as a worker discovers them)
import qastream.tables.status  # noqa: F401
from qastream.agents import batches as batch_timer
from qastream.app import storage
from qastream.db import owners, queries, webhooks
from qastream.db.queries import StoredAnswer, Submission
from qastream.policy.ids import question_id
from qastream.policy.webhooks import EventKind
from qastream.web import batches, cancel

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def database(engine, monkeypatch):
    """storage's real statements on the SQLite ``engine``; enqueued jobs and cancel events recorded."""
    monkeypatch.setattr(storage, "engine", engine)
    enqueued: list = []
    announced: list = []

    async def enqueue_batch(jobs):
        enqueued.extend(jobs)
        return len(jobs)

    async def announce(cancelled):
        announced.extend(cancelled)

    monkeypatch.setattr(batches, "enqueue_bulk", enqueue_batch)
    monkeypatch.setattr(cancel, "announce", announce)
    engine.enqueued, engine.announced = enqueued, announced
    yield engine


def on_db(engine, fn, *args):
    with engine.begin() as connection:
        return fn(connection, *args)


def answered(text, at=1000.0):
    return StoredAnswer(question_id=question_id(text), question_text=text, original_answer="ref", accepted_at=at,
                        epoch=1, answer=f"answer to {text}", score=0.9, first_score=0.9, processing_attempts=1,
                        error_retries=0, total_processing_time_ms=5.0, llm_time_ms=1.0, low_quality=False,
                        model="m", at=at + 1)


async def settle():
    """Let the background enqueue task run."""
    for task in list(batches.app.runtime.background):
        await task


async def post_batch(client, questions, **body):
    response = await client.post("/batches", json={"questions": questions, **body})
    return response.status, await response.json()


async def results_of(client, batch_id):
    response = await client.get(f"/batches/{batch_id}/results")
    assert response.status == 200 and response.content_type == "application/x-ndjson"
    return [json.loads(line) for line in (await response.text()).splitlines()]


async def test_a_batch_is_stored_enqueued_once_per_question_and_answers_one_line_per_item(client, database, monkeypatch):
    monkeypatch.setattr(batches, "settings", dataclasses.replace(batches.settings, webhook_secret="s3cret",
                                                                 webhook_allowed_hosts="127.0.0.1"))
    on_db(database, queries.save_completed, [answered("What is old?")])
    questions = [{"question_text": "What is a compiler?", "custom_id": "c1"},
                 {"question_text": "What is old?", "custom_id": "c2"},
                 {"question_text": "What is a  compiler?", "custom_id": "c3"},   # the same question as line 1
                 {"question_text": "What is RAM?", "original_answer": "Memory.", "custom_id": "c4"}]
    status, body = await post_batch(client, questions, metadata={"run": 1}, webhook_url="http://127.0.0.1:1/h")
    assert status == 202 and body["status"] == "in_progress"
    assert body["request_counts"] == {"total": 4, "completed": 1, "low_quality": 0, "failed": 0, "cancelled": 0}
    await settle()
    assert sorted(job.question_text for job in database.enqueued) == ["What is RAM?", "What is a compiler?"]
    response = await client.get(f"/batches/{body['batch_id']}")
    shown = await response.json()
    assert shown["metadata"] == {"run": 1} and shown["webhook"] == {"url": "http://127.0.0.1:1/h", "state": None,
                                                                               "delivery": None}
    assert shown["request_counts"]["completed"] == 1 and shown["status"] == "in_progress"
    lines = await results_of(client, body["batch_id"])
    assert [line["custom_id"] for line in lines] == ["c1", "c2", "c3", "c4"]
    assert lines[0]["question_id"] == lines[2]["question_id"] == question_id("What is a compiler?")
    assert lines[1]["status"] == "completed" and lines[1]["answer"] == "answer to What is old?"
    assert lines[1]["attempts"] == 1 and lines[1]["low_quality"] is False
    assert lines[0]["status"] == "pending" and lines[0]["answer"] is None
    listed = await (await client.get("/batches?limit=5")).json()
    assert body["batch_id"] in [b["batch_id"] for b in listed["batches"]]


async def test_results_stream_every_line_of_a_batch_larger_than_a_page(client, database, monkeypatch):
    monkeypatch.setattr(batches, "RESULTS_CHUNK", 7)
    monkeypatch.setattr(batches, "ACCEPT_CHUNK", 9)
    status, body = await post_batch(client, [{"question_text": f"Question {n}?", "custom_id": str(n)}
                                             for n in range(50)])
    assert status == 202
    lines = await results_of(client, body["batch_id"])
    assert [line["custom_id"] for line in lines] == [str(n) for n in range(50)]


async def test_bad_ndjson_lines_are_listed_by_number_or_skipped_on_request(client, database):
    body = "\n".join([json.dumps({"question_text": "Fine?"}), "{oops", json.dumps({"question_text": ""}),
                      json.dumps({"question_text": "Also fine?", "custom_id": "x"})])
    headers = {"Content-Type": "application/x-ndjson"}
    refused = await client.post("/batches", data=body, headers=headers)
    answer = await refused.json()
    assert refused.status == 400 and [e["line"] for e in answer["invalid_lines"]] == [2, 3]
    assert "not valid JSON" in answer["invalid_lines"][0]["error"] and answer["invalid_count"] == 2
    accepted = await client.post("/batches?skip_invalid=true", data=body, headers=headers)
    answer = await accepted.json()
    assert accepted.status == 202 and answer["request_counts"]["total"] == 2
    assert [e["line"] for e in answer["skipped_lines"]] == [2, 3]


@pytest.mark.parametrize("content_type, body, status", [
    ("text/plain", b"x", 415),
    ("application/json", b'{"questions": []}', 400),
    ("application/x-ndjson", b'{"question_text": ""}', 400),
])
async def test_what_is_not_a_batch_is_a_4xx(client, database, content_type, body, status):
    response = await client.post("/batches", data=body, headers={"Content-Type": content_type})
    assert response.status == status and "error" in await response.json()


async def test_over_the_limits_is_413(client, database, monkeypatch):
    monkeypatch.setattr(batches, "settings", dataclasses.replace(batches.settings, batch_max_questions=3,
                                                                 batch_max_bytes=2000))
    status, body = await post_batch(client, [{"question_text": f"q{n}"} for n in range(4)])
    assert status == 413 and "over the limit of 3" in body["error"]
    status, body = await post_batch(client, [{"question_text": "x" * 3000}])
    assert status == 413


async def test_cancelling_a_batch_cancels_its_pending_questions_once(client, database):
    on_db(database, queries.save_completed, [answered("Done already?")])
    status, body = await post_batch(client, [{"question_text": "Never asked?"}, {"question_text": "Done already?"},
                                             {"question_text": "In flight?"}])
    batch_id = body["batch_id"]
    first = await client.delete(f"/batches/{batch_id}")
    shown = await first.json()
    await settle()
    assert first.status == 200 and shown["status"] == "cancelling" and shown["cancelled_at"] is not None
    assert shown["request_counts"] == {"total": 3, "completed": 1, "low_quality": 0, "failed": 0, "cancelled": 2}
    assert sorted(c.question_id for c in database.announced) == sorted(
        [question_id("Never asked?"), question_id("In flight?")])
    second = await client.delete(f"/batches/{batch_id}")
    await settle()
    assert second.status == 200 and (await second.json())["request_counts"] == shown["request_counts"]
    assert len(database.announced) == 2  # nothing cancelled twice
    lines = await results_of(client, batch_id)
    assert [line["status"] for line in lines] == ["cancelled", "completed", "cancelled"]
    assert lines[0]["error"] and lines[1]["error"] is None
    # the timer ends it, once; the hook runs, and again only if notified_at was never set
    hook = AsyncMock()
    batch_timer_hook = batch_timer.batch_finished
    batch_timer.batch_finished = hook
    grace = batch_timer.settings.batch_cancel_grace_seconds
    try:
        assert await batch_timer.end_batches(time.time()) == 0  # calls in flight have the grace to be stored
        assert (await (await client.get(f"/batches/{batch_id}")).json())["status"] == "cancelling"
        assert await batch_timer.end_batches(time.time() + grace + 1) >= 1
        assert await batch_timer.end_batches(time.time() + grace + 1) == 0
        assert await batch_timer.notify_finished() >= 1
        assert await batch_timer.notify_finished() == 0
    finally:
        batch_timer.batch_finished = batch_timer_hook
    assert batch_id in [call.args[0].batch_id for call in hook.await_args_list]
    assert (await (await client.get(f"/batches/{batch_id}")).json())["status"] == "cancelled"


async def test_a_batch_whose_questions_are_all_answered_completes(client, database):
    status, body = await post_batch(client, [{"question_text": "Soon answered?"}])
    on_db(database, queries.save_completed, [answered("Soon answered?", at=time.time())])
    await batch_timer.end_batches(time.time())
    shown = await (await client.get(f"/batches/{body['batch_id']}")).json()
    assert shown["status"] == "completed" and shown["finished_at"] is not None


async def test_the_list_shows_each_batch_webhook_delivery(client, database, monkeypatch):
    """``GET /batches`` carries what ``GET /batches/{id}`` does, delivery included: the dashboard's panel reads it."""
    monkeypatch.setattr(batches, "settings", dataclasses.replace(batches.settings, webhook_secret="s3cret"))
    _, hooked = await post_batch(client, [{"question_text": "Hooked?"}], webhook_url="https://hooks.example.com/b")
    _, plain = await post_batch(client, [{"question_text": "Plain?"}], metadata={"note": "<b>x</b>"})
    listed = {b["batch_id"]: b for b in (await (await client.get("/batches")).json())["batches"]}
    assert listed[hooked["batch_id"]]["webhook"] == {"url": "https://hooks.example.com/b", "state": None,
                                                     "delivery": None}  # not scheduled before the batch ends
    on_db(database, webhooks.insert, [webhooks.NewDelivery("d" * 32, EventKind.BATCH_COMPLETED, hooked["batch_id"],
                                                           "https://hooks.example.com/b", "{}", time.time())])
    listed = {b["batch_id"]: b for b in (await (await client.get("/batches")).json())["batches"]}
    shown = listed[hooked["batch_id"]]["webhook"]
    assert shown["state"] == "pending" and shown["delivery"]["delivery_id"] == "d" * 32
    assert shown == (await (await client.get(f"/batches/{hooked['batch_id']}")).json())["webhook"]
    assert listed[plain["batch_id"]]["webhook"] == {"url": None, "state": None, "delivery": None}
    assert listed[plain["batch_id"]]["metadata"] == {"note": "<b>x</b>"}


@pytest.mark.parametrize("webhook_url, ended, kind", [
    ("https://hooks.example.com/b", "completed", "batch.completed"),
    ("https://hooks.example.com/b", "cancelled", "batch.cancelled"),
    (None, "completed", None),                                       # no webhook: nothing scheduled
])
async def test_the_end_of_batch_hook_schedules_the_batch_webhook(client, database, monkeypatch, webhook_url, ended,
                                                                 kind):
    monkeypatch.setattr(batches, "settings", dataclasses.replace(batches.settings, webhook_secret="s3cret"))
    status, body = await post_batch(client, [{"question_text": "Soon answered?", "custom_id": "x"}],
                                    metadata={"run": 7}, **({"webhook_url": webhook_url} if webhook_url else {}))
    assert status == 202
    on_db(database, queries.save_completed, [answered("Soon answered?", at=time.time())])
    batch = await storage.batch(body["batch_id"])
    schedule = AsyncMock()
    monkeypatch.setattr(batch_timer, "schedule", schedule)
    await batch_timer.batch_finished(dataclasses.replace(batch, status=ended))
    if kind is None:
        schedule.assert_not_awaited()
        return
    [call] = schedule.await_args_list
    event, subject, url, data = call.args
    assert (str(event), subject, url) == (kind, body["batch_id"], webhook_url)
    assert data["status"] == ended and data["metadata"] == {"run": 7}
    assert data["request_counts"] == {"total": 1, "completed": 1, "low_quality": 0, "failed": 0, "cancelled": 0}


async def test_delete_query_cancels_a_pending_question_and_is_idempotent(client, database):
    qid = question_id("Pending question?")
    on_db(database, queries.accept, [Submission(qid, "Pending question?", None, time.time())])
    for _ in range(2):
        response = await client.delete(f"/query/{qid}")
        await settle()
        assert response.status == 200
        assert await response.json() == {"question_id": qid, "status": "cancelled", "cancelled": True}
    assert [c.question_id for c in database.announced] == [qid]
    assert on_db(database, queries.pending_before, time.time() + 1) == []  # reconciliation never takes it again
    # asked again, it starts over in a new epoch
    [again] = on_db(database, queries.accept, [Submission(qid, "Pending question?", None, time.time())])
    assert (again.kind, again.epoch) == (queries.RESUBMITTED, 2)


async def test_delete_query_leaves_an_answered_question_and_404s_an_unknown_one(client, database):
    on_db(database, queries.save_completed, [answered("Answered?")])
    response = await client.delete(f"/query/{question_id('Answered?')}")
    assert (await response.json())["status"] == "completed"
    assert (await client.delete("/query/00000000000000ff")).status == 404
    assert (await client.delete("/query/nope")).status == 404
    assert (await client.get("/batches/batch_000000000000000000000000")).status == 404
    assert (await client.get("/batches/../etc")).status == 404


async def test_a_batch_cut_short_by_the_database_keeps_what_was_stored_and_can_end(client, database, monkeypatch):
    monkeypatch.setattr(batches, "ACCEPT_CHUNK", 2)
    real = storage.accept_batch_items
    calls = []

    async def fail_the_second_chunk(batch_id, items):
        calls.append(len(items))
        if len(calls) == 2:
            raise OSError("database went away")
        return await real(batch_id, items)

    monkeypatch.setattr(storage, "accept_batch_items", fail_the_second_chunk)
    status, body = await post_batch(client, [{"question_text": f"Cut {n}?"} for n in range(5)])
    assert status == 503 and body["stored_lines"] == 2 and "first 2 of 5" in body["error"]
    await settle()
    assert len(database.enqueued) == 2
    shown = await (await client.get(f"/batches/{body['batch_id']}")).json()
    assert shown["request_counts"]["total"] == 2


# The access middleware keeps the principal under a str key, which aiohttp warns about once per process.
@pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")
async def test_a_key_sees_and_cancels_only_its_own_batches_and_questions(client, database, monkeypatch):
    from qastream.db import keys
    from qastream.policy.access import Limits, parse_scopes
    from qastream.policy.keycache import KeyCache
    from qastream.policy.keys import hash_key, new_key
    from qastream.web import access

    monkeypatch.setattr(access, "settings", dataclasses.replace(access.settings, auth="required"))
    batches.app.runtime.keys = KeyCache(0.5)

    def key(name, scopes, limits=None):
        secret = new_key()
        on_db(database, keys.create, name, hash_key(secret), parse_scopes(scopes), limits or Limits(), 1e9)
        return {"Authorization": f"Bearer {secret}"}

    alice, bob, root = key("alice", "submit,read"), key("bob", "submit,read"), key("root", "admin")
    bounded = key("small", "submit,read", Limits(max_in_flight=2))
    response = await client.post("/batches", json={"questions": [{"question_text": "Alice's question?"}]},
                                 headers=alice)
    batch_id = (await response.json())["batch_id"]
    qid = question_id("Alice's question?")
    for method, path in (("GET", f"/batches/{batch_id}"), ("GET", f"/batches/{batch_id}/results"),
                         ("DELETE", f"/batches/{batch_id}"), ("DELETE", f"/query/{qid}")):
        refused = await client.request(method, path, headers=bob)
        assert refused.status == 404, (method, path)
    assert (await (await client.get("/batches", headers=bob)).json())["batches"] == []
    assert [b["batch_id"] for b in (await (await client.get("/batches", headers=alice)).json())["batches"]] == [
        batch_id]
    assert (await client.get(f"/batches/{batch_id}", headers=root)).status == 200
    assert on_db(database, lambda c: c.execute(select(func.count()).where(owners.OWN.c.open)).scalar()) == 1
    response = await client.delete(f"/query/{qid}", headers=alice)
    assert response.status == 200 and (await response.json())["status"] == "cancelled"
    # cancelled, it is no longer in flight for alice's bound
    assert on_db(database, lambda c: c.execute(select(func.count()).where(owners.OWN.c.open)).scalar()) == 0
    # a key's in-flight bound is checked once for the whole batch
    response = await client.post("/batches", json={"questions": [{"question_text": f"Small {n}?"} for n in range(3)]},
                                 headers=bounded)
    assert response.status == 429 and "Retry-After" in response.headers
    response = await client.post("/batches", json={"questions": [{"question_text": f"Small {n}?"} for n in range(2)]},
                                 headers=bounded)
    assert response.status == 202


@pytest.mark.parametrize("url, secret, reason", [
    ("http://127.0.0.1:1/h", "", "QASTREAM_WEBHOOK_SECRET"),      # nothing to sign with: no webhook is sent
    ("http://127.0.0.1:1/h", "s3cret", "loopback"),               # loopback, not in the allowed hosts
    ("ftp://hooks.example.com/h", "s3cret", "http"),
])
async def test_a_batch_webhook_is_checked_as_a_question_webhook_is(client, database, monkeypatch, url, secret, reason):
    monkeypatch.setattr(batches, "settings", dataclasses.replace(batches.settings, webhook_secret=secret))
    status, body = await post_batch(client, [{"question_text": "What is a compiler?"}], webhook_url=url)
    assert status == 400 and reason in body["error"]
    assert database.enqueued == []


async def test_batched_names_the_questions_a_batch_asked(client, database):
    status, _ = await post_batch(client, [{"question_text": "Asked in a batch?"}])
    assert status == 202
    on_db(database, queries.accept, [Submission(question_id("Asked alone?"), "Asked alone?", None, time.time())])
    asked = [question_id("Asked in a batch?"), question_id("Asked alone?"), question_id("Never asked?")]
    assert await storage.batched(asked) == {question_id("Asked in a batch?")}
    assert await storage.batched([]) == set()
