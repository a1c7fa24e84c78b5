"""Delivering webhooks: the client's bounded POST to checked addresses, the agent that parks instead of waiting,
the attempt that claims its number, and the request parser's ``webhook_url``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from unittest.mock import AsyncMock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from qastream import webhooks as scheduling
from qastream.agents import webhooks as agent_module
from qastream.app import app, settings, storage, topics, webhook_client
from qastream.db.queries import Submission
from qastream.errors import RequestError
from qastream.models import WebhookDelivery
from qastream.policy.webhook_targets import parse_allowed_hosts
from qastream.policy.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    DeliveryState,
    EventKind,
    Notification,
    Step,
    verify,
)
from qastream.services.storage import Storage
from qastream.services.webhooks import CheckedResolver, WebhookClient
from qastream.tables.parking import webhook_parking
from qastream.web.requests import parse_webhook_url

LOCAL = parse_allowed_hosts("127.0.0.1,rebind-allowed.example")


@pytest.fixture
async def receiver():
    """A local receiver: /ok answers 200, /fail 500, /hang never, /redirect 302 to /ok; it records what came."""
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, dict(request.headers), await request.read()))
        if request.path == "/fail":
            return web.Response(status=500, text="boom")
        if request.path == "/hang":
            await asyncio.sleep(30)
        if request.path == "/redirect":
            raise web.HTTPFound("/ok")
        return web.Response(status=200)

    application = web.Application()
    application.router.add_route("POST", "/{tail:.*}", handler)
    server = TestServer(application, host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}", seen
    await server.close()


@pytest.fixture
async def client():
    started = WebhookClient(timeout=0.5, concurrency=3, host_concurrency=2, allowed_hosts=LOCAL)
    await started.on_start()
    yield started
    await started.on_stop()


@pytest.mark.parametrize("path, status, error", [
    ("/ok", 200, None),
    ("/fail", 500, "HTTP 500: boom"),
    ("/redirect", 302, "HTTP 302"),      # not followed
])
async def test_post_reports_the_answer(client, receiver, path, status, error):
    base, seen = receiver
    result = await client.post(base + path, b"{}", {"X-Test": "1"})
    assert (result.status, result.refused) == (status, False)
    assert (result.error or "").startswith(error or "")
    assert [p for p, _, _ in seen] == [path]  # the redirect's target was never asked


async def test_a_receiver_that_hangs_costs_one_time_out(client, receiver):
    base, _ = receiver
    started = time.monotonic()
    result = await client.post(base + "/hang", b"{}", {})
    assert time.monotonic() - started < 2.0
    assert result.status is None and "no answer within 0.5 s" in result.error


async def test_a_loopback_literal_not_allowed_is_refused_without_a_request(receiver):
    base, seen = receiver
    strict = WebhookClient(timeout=0.5, concurrency=1, host_concurrency=1, allowed_hosts=frozenset())
    await strict.on_start()
    try:
        result = await strict.post(base + "/ok", b"{}", {})
    finally:
        await strict.on_stop()
    assert result.refused and "loopback" in result.error and seen == []


class Rebinding:
    """A resolver stand-in whose every name resolves to 127.0.0.1 (what a rebinding attacker's DNS answers)."""

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": 0}]

    async def close(self):
        pass


async def test_a_name_that_resolves_to_a_private_address_is_refused_when_sent(client, receiver, monkeypatch):
    base, seen = receiver
    port = base.rsplit(":", 1)[1]
    resolver = client.session.connector._resolver
    assert isinstance(resolver, CheckedResolver)
    monkeypatch.setattr(resolver, "_inner", Rebinding())
    refused = await client.post(f"http://rebind.example:{port}/ok", b"{}", {})
    assert refused.refused and "rebind.example resolves to 127.0.0.1 is a loopback address" in refused.error
    assert seen == []
    allowed = await client.post(f"http://rebind-allowed.example:{port}/ok", b"{}", {})
    assert allowed.status == 200  # an allowed name connects to the address the resolver checked


async def test_slots_bound_attempts_in_all_and_per_host(client):
    gate = asyncio.Event()

    async def held():
        await gate.wait()

    assert client.try_start("a.example", held) and client.try_start("a.example", held)
    assert not client.try_start("a.example", held)          # the host's two slots are taken
    assert client.try_start("b.example", held)
    assert not client.try_start("c.example", held)          # all three are taken
    gate.set()
    await asyncio.sleep(0.01)
    assert client.running == {} and client.try_start("c.example", held)


# -- the agent ------------------------------------------------------------------------------------

@pytest.fixture
def memory_app():
    app.finalize()
    app.flow_control.resume()
    yield
    webhook_parking.data.clear()


def delivery(**fields) -> WebhookDelivery:
    base = dict(delivery_id="d" * 32, kind="question.completed", subject_id="0" * 16,
                url="http://127.0.0.1:1/h", body='{"id":"x"}', attempt=1)
    return WebhookDelivery(**{**base, **fields})


async def test_a_wait_is_parked_and_its_release_starts_the_attempt_once(memory_app, monkeypatch):
    started = []
    monkeypatch.setattr(webhook_client, "try_start", lambda host, attempt: started.append(host) or True)
    waiting = delivery(attempt=2, step=Step.WAIT, due_at=time.time() + 60)
    async with agent_module.deliver_webhooks.test_context() as agent:
        await agent.put(waiting, key=waiting.delivery_id)
        assert webhook_parking[waiting.delivery_id]["delivery"]["attempt"] == 2 and started == []
        release = waiting.derive(step=Step.RELEASE)
        await agent.put(release, key=waiting.delivery_id)
        await agent.put(release, key=waiting.delivery_id)   # released twice: the second finds nothing parked
    assert waiting.delivery_id not in webhook_parking
    assert started == ["127.0.0.1"]


async def test_no_free_slot_parks_the_delivery_for_one_time_out_without_an_attempt(memory_app, monkeypatch):
    monkeypatch.setattr(webhook_client, "try_start", lambda host, attempt: False)
    async with agent_module.deliver_webhooks.test_context() as agent:
        await agent.put(delivery(), key="d" * 32)
    parked = webhook_parking["d" * 32]["delivery"]
    assert parked["attempt"] == 1 and parked["step"] == Step.WAIT
    assert parked["due_at"] == pytest.approx(time.time() + settings.webhook_timeout_seconds, abs=2)
    assert app.runtime.webhook_counts["deferred"] == 1


@pytest.fixture
def sent_webhooks(monkeypatch):
    captured = []

    async def send(*, key=None, value=None, **kwargs):
        captured.append(value)

    monkeypatch.setattr(topics.webhooks, "send", send)
    return captured


@pytest.fixture
def recorded(monkeypatch):
    calls = []

    async def record(ident, attempt, state, status, error, at):
        calls.append((attempt, state, status, error))
        return True

    monkeypatch.setattr(storage, "claim_delivery", AsyncMock(return_value=True))
    monkeypatch.setattr(storage, "record_delivery", record)
    return calls


async def test_an_attempt_signs_the_stored_body_and_a_failure_waits_for_the_next(
        receiver, client, recorded, sent_webhooks, monkeypatch):
    base, seen = receiver
    monkeypatch.setattr(agent_module, "webhook_client", client)
    monkeypatch.setattr(agent_module, "settings", dataclasses.replace(settings, webhook_secret="s3cret"))
    await agent_module.attempt(delivery(url=base + "/ok"))
    [(_, headers, body)] = seen
    assert body == b'{"id":"x"}' and verify("s3cret", body, headers[SIGNATURE_HEADER])
    assert headers[DELIVERY_HEADER] == "d" * 32
    await agent_module.attempt(delivery(url=base + "/fail", attempt=2))
    assert recorded == [(1, DeliveryState.DELIVERED, 200, None), (2, DeliveryState.PENDING, 500, "HTTP 500: boom")]
    [wait] = sent_webhooks
    assert (wait.attempt, wait.step) == (3, Step.WAIT) and wait.due_at > time.time()


async def test_an_attempt_already_made_sends_nothing(receiver, client, recorded, sent_webhooks, monkeypatch):
    base, seen = receiver
    monkeypatch.setattr(agent_module, "webhook_client", client)
    monkeypatch.setattr(storage, "claim_delivery", AsyncMock(return_value=False))
    await agent_module.attempt(delivery(url=base + "/ok"))
    assert seen == [] and recorded == [] and sent_webhooks == []


# -- the request --------------------------------------------------------------------------------

@pytest.mark.parametrize("payload, url", [
    ({}, None), ({"webhook_url": None}, None), ([], None),
    ({"webhook_url": " http://127.0.0.1:9/h "}, "http://127.0.0.1:9/h"),
    ({"webhook_url": "https://hooks.example.com/h"}, "https://hooks.example.com/h"),
])
def test_parse_webhook_url(payload, url):
    assert parse_webhook_url(payload, secret_set=True, allowed_hosts=LOCAL) == url


@pytest.mark.parametrize("payload, secret_set, message", [
    ({"webhook_url": 5}, True, "must be a string"),
    ({"webhook_url": "https://hooks.example.com/h"}, False, "QASTREAM_WEBHOOK_SECRET is not set"),
    ({"webhook_url": "http://10.0.0.1/h"}, True, "private"),
    ({"webhook_url": "gopher://hooks.example.com/"}, True, "http or https"),
])
def test_parse_webhook_url_refuses_with_a_400(payload, secret_set, message):
    with pytest.raises(RequestError) as caught:
        parse_webhook_url(payload, secret_set=secret_set, allowed_hosts=LOCAL)
    assert caught.value.status == 400 and message in caught.value.message


async def test_without_a_secret_an_attempt_fails_at_once(receiver, client, recorded, sent_webhooks, monkeypatch):
    base, seen = receiver
    monkeypatch.setattr(agent_module, "webhook_client", client)
    monkeypatch.setattr(agent_module, "settings", dataclasses.replace(settings, webhook_secret=""))
    await agent_module.attempt(delivery(url=base + "/ok"))
    assert seen == [] and sent_webhooks == []
    assert recorded == [(1, DeliveryState.FAILED, None, "QASTREAM_WEBHOOK_SECRET is empty: nothing can be signed")]


# -- scheduling ---------------------------------------------------------------------------------

@pytest.fixture
async def sqlite_storage(tmp_path, monkeypatch):
    started = Storage(f"sqlite:///{tmp_path}/w.db")
    await started.start()
    monkeypatch.setattr(scheduling, "storage", started)
    yield started
    await started.stop()


async def test_schedule_is_idempotent_by_event_and_subject(sqlite_storage, sent_webhooks):
    url = "https://hooks.example.com/h"
    first = await scheduling.schedule(EventKind.BATCH_COMPLETED, "b1", url, {"n": 1})
    again = await scheduling.schedule(EventKind.BATCH_COMPLETED, "b1", url, {"n": 2})  # a re-run after a crash
    assert first.delivery_id == again.delivery_id and again.body == first.body and json.loads(first.body)["data"] == {
        "n": 1}
    # Still pending, so the re-run sends it again (an attempt claims its number: one POST either way).
    assert [(m.delivery_id, m.attempt, m.step) for m in sent_webhooks] == [(first.delivery_id, 1, Step.SEND)] * 2
    assert await sqlite_storage.claim_delivery(first.delivery_id, 1, time.time())
    assert await sqlite_storage.record_delivery(first.delivery_id, 1, DeliveryState.DELIVERED, 204, None, time.time())
    done = await scheduling.schedule(EventKind.BATCH_COMPLETED, "b1", url, {"n": 3})
    assert done.state == DeliveryState.DELIVERED and len(sent_webhooks) == 2  # never sent again
    state = await scheduling.delivery_state(EventKind.BATCH_COMPLETED, "b1")
    assert (state["state"], state["attempts"], state["last_status"]) == ("delivered", 1, 204)
    assert await scheduling.delivery_state(EventKind.BATCH_CANCELLED, "b1") is None


async def test_a_pending_delivery_with_attempts_under_way_is_left_to_its_back_off(sqlite_storage, sent_webhooks):
    url = "https://hooks.example.com/h"
    first = await scheduling.schedule(EventKind.BATCH_COMPLETED, "b2", url, {})
    assert await sqlite_storage.claim_delivery(first.delivery_id, 1, time.time())
    assert await sqlite_storage.record_delivery(first.delivery_id, 1, DeliveryState.PENDING, 500, "x", time.time())
    again = await scheduling.schedule(EventKind.BATCH_COMPLETED, "b2", url, {})  # the store stage ran again
    assert again.attempts == 1 and len(sent_webhooks) == 1  # no second message skipping the wait


async def test_announce_questions_schedules_only_questions_with_a_webhook(sqlite_storage, sent_webhooks):
    await sqlite_storage.accept(Submission("0" * 16, "q0", None, time.time(), webhook_url="https://a.example/h"))
    await sqlite_storage.accept(Submission("1" * 16, "q1", None, time.time()))
    await scheduling.announce_questions(EventKind.QUESTION_COMPLETED, [("0" * 16, 1, {"answer": "a"}),
                                                                       ("1" * 16, 1, {"answer": "b"})])
    [message] = sent_webhooks
    assert message.subject_id == "0" * 16 and message.url == "https://a.example/h"
    assert json.loads(message.body)["type"] == "question.completed"


async def test_a_send_the_broker_refuses_leaves_the_delivery_pending_for_the_sweep(sqlite_storage, monkeypatch):
    async def send(**kwargs):
        raise RuntimeError("KafkaTimeoutError")

    monkeypatch.setattr(topics.webhooks, "send", send)
    scheduled = await scheduling.schedule(EventKind.QUESTION_FAILED, "0" * 16, "https://a.example/h", {})
    assert scheduled.state == DeliveryState.PENDING
    [lost] = await sqlite_storage.take_stale_deliveries(time.time() + 1, time.time() + 1, 10)
    assert lost.delivery_id == scheduled.delivery_id


async def test_an_attempt_past_the_last_is_recorded_failed_without_a_request(
        receiver, client, recorded, sent_webhooks, monkeypatch):
    base, seen = receiver
    monkeypatch.setattr(agent_module, "webhook_client", client)
    await agent_module.attempt(delivery(url=base + "/ok", attempt=agent_module.backoff.max_attempts + 1))
    assert seen == [] and sent_webhooks == []
    assert recorded == [(agent_module.backoff.max_attempts, DeliveryState.FAILED, None,
                         "the last attempt was lost (the worker stopped during it)")]


async def test_one_event_whose_data_is_not_json_fails_alone(sqlite_storage, sent_webhooks):
    scheduled = await scheduling.schedule_many([
        Notification(EventKind.QUESTION_COMPLETED, "0" * 16, "https://a.example/h", {"bad": object()}),
        Notification(EventKind.QUESTION_COMPLETED, "1" * 16, "https://a.example/h", {"answer": "fine"}),
        Notification(EventKind.QUESTION_COMPLETED, "2" * 16, "https://a.example/h", {"text": "\ud800"}),  # unstorable
    ])
    assert [d.subject_id for d in scheduled] == ["1" * 16] and [m.subject_id for m in sent_webhooks] == ["1" * 16]


def test_due_deliveries_only_from_active_partitions_and_once(memory_app):
    for ident, due_at, partition in (("a" * 32, 10.0, 0), ("b" * 32, 10.0, 1), ("c" * 32, 99.0, 0)):
        webhook_parking.data[ident] = {"delivery": delivery(delivery_id=ident, step=Step.WAIT, due_at=due_at).asdict(),
                                       "partition": partition}
    assert [d.delivery_id for d in agent_module.due_deliveries({0}, now=20.0)] == ["a" * 32]
    app.runtime.released[(webhook_parking.name, "a" * 32)] = 10.0
    assert agent_module.due_deliveries({0}, now=20.0) == []
    assert [d.delivery_id for d in agent_module.due_deliveries({0, 1}, now=100.0)] == ["b" * 32, "c" * 32]
