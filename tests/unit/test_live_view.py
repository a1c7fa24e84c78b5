"""``GET /status/{id}/events`` in the worker's real aiohttp application, without a broker.

The owner of a question is decided by a stand-in for the router; changes
are handed to the watchers as ``track`` does; the owning worker of the
relay tests is a second aiohttp server that records what it was sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any, Optional
from unittest.mock import AsyncMock

import pytest
import pytest_asyncio
from aiohttp import web as aioweb
from aiohttp.test_utils import TestServer
from yarl import URL

from qastream.app import app, storage
from qastream.policy.lifecycle import STAGE_STATE, Stage, StatusRecord, version
from qastream.streaming.watchers import Update
from qastream.tables.status import attempts_table, status_table
from qastream.web import live, sse, status

pytestmark = pytest.mark.asyncio(loop_scope="session")

QID = "0123456789abcdef"
PATH = f"/status/{QID}/events"


def record(stage: Stage, attempt: int = 1, retries: int = 0) -> StatusRecord:
    return {"question_id": QID, "state": STAGE_STATE[stage], "stage": stage, "epoch": 1, "attempt": attempt,
            "retries": retries, "version": list(version(1, attempt, retries, stage)), "accepted_at": 1.0,
            "updated_at": 2.0, "detail": None,
            "result": {"answer": "a\nb"} if stage == Stage.COMPLETED else None}


def publish(stage: Stage, attempt: int = 1, retries: int = 0) -> None:
    """What ``track`` does after folding an event: the table holds the record, the watchers get it."""
    status_table.data[QID] = record(stage, attempt, retries)
    app.runtime.watchers.publish(QID, Update(record(stage, attempt, retries), None))


async def next_event(response: Any, timeout: float = 5.0) -> Optional[dict[str, Any]]:
    """The next event or comment of a stream as ``{field: value}``; ``None`` when the stream ended."""
    fields: dict[str, Any] = {}
    async with asyncio.timeout(timeout):
        while True:
            line = await response.content.readline()
            if not line:
                return None
            text = line.decode("utf-8").rstrip("\n")
            if text == "":
                return fields
            name, _, value = text.partition(":")
            fields[name or "comment"] = value.removeprefix(" ")


async def events_until_closed(response: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
    got = []
    while (item := await next_event(response, timeout)) is not None:
        if "comment" not in item:
            got.append(item)
    return got


@pytest.fixture
def owned(monkeypatch):
    """This worker owns every question (GET /status's too); streams ping every 50 ms and last at most 5 s."""
    for view in (live, status):
        monkeypatch.setattr(view, "ensure_metadata", AsyncMock())
    monkeypatch.setattr(live, "owner_of", lambda table, key: None)
    monkeypatch.setattr(status, "forwarded", AsyncMock(return_value=None))
    monkeypatch.setattr(live, "settings", dataclasses.replace(live.settings, live_ping_seconds=0.05,
                                                              live_max_seconds=5.0))
    monkeypatch.setattr(storage, "lookup", AsyncMock(return_value=None))
    monkeypatch.setattr(storage, "owns", AsyncMock(return_value=True))
    yield
    status_table.data.clear()
    attempts_table.data.clear()


async def test_an_unknown_question_is_the_404_of_get_status(client, owned):
    streamed = await client.get(PATH)
    polled = await client.get(f"/status/{QID}")
    assert streamed.status == polled.status == 404
    assert await streamed.json() == await polled.json()
    assert (await client.get("/status/nothex/events")).status == 404


async def test_a_finished_question_is_one_event_then_the_end(client, owned):
    status_table.data[QID] = record(Stage.COMPLETED)
    response = await client.get(PATH)
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    events = await events_until_closed(response)
    assert [e["event"] for e in events] == ["completed"]
    assert json.loads(events[0]["data"]) == await (await client.get(f"/status/{QID}")).json()
    assert events[0]["id"] == "1.1.0.6"
    assert app.runtime.watchers._by_question == {} and app.runtime.watchers.gate.in_flight == 0


async def test_head_answers_the_headers_without_holding_a_stream(client, owned):
    status_table.data[QID] = record(Stage.GENERATING)
    response = await asyncio.wait_for(client.head(PATH), 2)
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    assert app.runtime.watchers.gate.in_flight == 0


async def test_a_question_known_only_to_the_database_is_one_event_from_there(client, owned, monkeypatch):
    row = {"question_id": QID, "status": "failed", "epoch": 2, "question_text": "q", "accepted_at": 1.0,
           "updated_at": 2.0, "error": {"class": "permanent", "message": "no"}}
    monkeypatch.setattr(storage, "lookup", AsyncMock(return_value=row))
    events = await events_until_closed(await client.get(PATH))
    assert [(e["event"], json.loads(e["data"])) for e in events] == [("failed", {**row, "source": "database"})]


async def test_each_change_arrives_in_order_and_the_stream_closes_after_the_terminal_one(client, owned):
    status_table.data[QID] = record(Stage.QUEUED)
    response = await client.get(PATH)
    first = await next_event(response)
    assert first["event"] == "queued" and json.loads(first["data"])["stage"] == "queued"
    publish(Stage.QUEUED)                       # a redelivery: nothing new
    publish(Stage.GENERATING)
    publish(Stage.SCORING)
    publish(Stage.REGENERATING)
    publish(Stage.WAITING_RETRY, attempt=2, retries=1)
    publish(Stage.GENERATING, attempt=2, retries=1)
    await asyncio.sleep(0.12)                   # quiet for two ping intervals
    status_table.data[QID] = record(Stage.SCORING, attempt=2, retries=1)  # a change older than the next one
    publish(Stage.COMPLETED, attempt=2, retries=1)
    rest = []
    while (item := await next_event(response)) is not None:
        rest.append(item)
    names = [item.get("event", ":" + item.get("comment", "")) for item in rest]
    assert [n for n in names if not n.startswith(":")] == [
        "generating", "scoring", "regenerating", "retrying", "generating", "completed"]
    assert ":ping" in names                     # the quiet time was kept alive
    ids = [tuple(map(int, item["id"].split("."))) for item in rest if "id" in item]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert json.loads(rest[-1]["data"])["result"] == {"answer": "a\nb"}


async def test_a_reconnecting_client_gets_only_what_it_has_not_seen(client, owned):
    status_table.data[QID] = record(Stage.SCORING)
    response = await client.get(PATH, headers={"Last-Event-ID": "1.1.0.3"})   # it has scoring
    publish(Stage.COMPLETED)
    assert [e["event"] for e in await events_until_closed(response)] == ["completed"]
    gone = await client.get(PATH, headers={"Last-Event-ID": "1.1.0.6"})      # it has the end
    assert gone.status == 204
    ignored = await client.get(PATH, headers={"Last-Event-ID": "garbage"})
    assert [e["event"] for e in await events_until_closed(ignored)] == ["completed"]


async def test_a_stream_ends_at_its_longest_and_when_the_question_moves(client, owned, monkeypatch):
    status_table.data[QID] = record(Stage.GENERATING)
    monkeypatch.setattr(live, "settings", dataclasses.replace(live.settings, live_max_seconds=0.3))
    started = time.monotonic()
    assert [e["event"] for e in await events_until_closed(await client.get(PATH))] == ["generating"]
    assert 0.25 < time.monotonic() - started < 3
    monkeypatch.setattr(live, "settings", dataclasses.replace(live.settings, live_max_seconds=30))
    response = await client.get(PATH)
    assert (await next_event(response))["event"] == "generating"
    monkeypatch.setattr(live, "owner_of", lambda table, key: URL("http://127.0.0.1:1"))   # a rebalance
    assert await events_until_closed(response, timeout=2) == []


async def test_a_stopping_worker_ends_its_streams(client, owned, monkeypatch):
    status_table.data[QID] = record(Stage.GENERATING)
    monkeypatch.setattr(live, "settings", dataclasses.replace(live.settings, live_ping_seconds=30))
    response = await client.get(PATH)
    assert (await next_event(response))["event"] == "generating"
    await live.close_streams(app.web.web_app)
    assert await events_until_closed(response, timeout=2) == []


async def test_past_the_limit_of_streams_a_new_one_is_503_with_retry_after(client, owned):
    status_table.data[QID] = record(Stage.GENERATING)
    gate = app.runtime.watchers.gate
    gate.in_flight = gate.limit
    try:
        refused = await client.get(PATH)
    finally:
        gate.in_flight = 0
    assert refused.status == 503 and int(refused.headers["Retry-After"]) >= 1
    assert "live status streams" in (await refused.json())["error"]


# -- relayed from the owner ---------------------------------------------------------------------------------

@pytest_asyncio.fixture(loop_scope="session")
async def owner(monkeypatch, owned):
    """A stand-in for the worker owning every question: streams two events, or answers ``refusal``."""
    seen: list[dict[str, str]] = []
    state: dict[str, Any] = {"refusal": None}

    async def events(request: aioweb.Request) -> aioweb.StreamResponse:
        seen.append(dict(request.headers))
        if state["refusal"] is not None:
            return state["refusal"]
        response = aioweb.StreamResponse(headers=sse.HEADERS)
        await response.prepare(request)
        await response.write(sse.event("generating", "1.1.0.2", {"stage": "generating"}))
        await asyncio.sleep(0.1)
        await response.write(sse.PING)
        await response.write(sse.event("completed", "1.1.0.6", {"stage": "completed"}))
        return response

    application = aioweb.Application()
    application.router.add_get("/status/{question_id}/events", events)
    server = TestServer(application, host="127.0.0.1")
    await server.start_server()
    monkeypatch.setattr(live, "owner_of", lambda table, key: URL(f"http://127.0.0.1:{server.port}"))
    yield seen, state
    await server.close()


async def test_a_stream_owned_elsewhere_is_relayed_with_the_clients_headers(client, owner):
    seen, _ = owner
    response = await client.get(PATH, headers={"Authorization": "Bearer k", "Last-Event-ID": "1.1.0.0",
                                               "Cookie": "private"})
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    assert [e["event"] for e in await events_until_closed(response)] == ["generating", "completed"]
    assert seen[0]["Authorization"] == "Bearer k" and seen[0]["Last-Event-ID"] == "1.1.0.0"
    assert seen[0]["X-Qastream-Relayed"] == "1" and "Cookie" not in seen[0]
    assert app.runtime.watchers.relays == set() and app.runtime.watchers.gate.in_flight == 0


async def test_the_owners_refusal_comes_back_whole(client, owner):
    _, state = owner
    state["refusal"] = aioweb.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "9"})
    refused = await client.get(PATH)
    assert (refused.status, refused.headers["Retry-After"], await refused.json()) == (429, "9", {"error": "slow down"})
    state["refusal"] = aioweb.Response(status=204)
    assert (await client.get(PATH)).status == 204


async def test_an_owner_that_does_not_answer_is_503(client, owned, monkeypatch):
    monkeypatch.setattr(live, "owner_of", lambda table, key: URL("http://127.0.0.1:1"))   # nothing listens
    refused = await client.get(PATH)
    assert refused.status == 503 and "did not answer" in (await refused.json())["error"]


async def test_a_relayed_request_is_never_relayed_again(client, owned, monkeypatch):
    """Two workers each believing the other owns the question (mid-rebalance) must not pass it back and forth."""
    monkeypatch.setattr(live, "owner_of", lambda table, key: URL("http://127.0.0.1:1"))
    refused = await client.get(PATH, headers={"X-Qastream-Relayed": "1"})
    assert refused.status == 503 and "moving between workers" in (await refused.json())["error"]
