"""Bounded answers at the edge: admission, Retry-After, enqueue and body time-outs, readiness, DB options."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock

import pytest

from qastream.app import app
from qastream.db.queries import CREATED, Acceptance, Submission
from qastream.errors import RequestError, Unavailable
from qastream.models import Job
from qastream.policy.admission import Gate, retry_after_header
from qastream.runtime import ENQUEUE_SLOTS
from qastream.services.health import OK, Probe, dependency_states, describe_failure
from qastream.services.storage import postgres_connect_args
from qastream.web import admission, query
from qastream.web.health import health_body
from qastream.web.requests import guarded, read_json


async def hang(*args: Any, **kwargs: Any) -> None:
    """A call to a dependency that never answers."""
    await asyncio.Event().wait()


class StubView:
    """Records what a view would answer (``View.json``'s signature)."""

    def json(self, value: Any, *, status: int = 200, headers: dict | None = None) -> tuple:
        return status, value, headers or {}


# -- admission ---------------------------------------------------------------------------------------

def test_gate_admits_up_to_its_limit_then_refuses_and_admits_again_when_one_leaves():
    gate = Gate(limit=2)
    assert [gate.try_enter(), gate.try_enter(), gate.try_enter()] == [True, True, False]
    gate.leave()
    assert gate.try_enter()
    assert gate.snapshot() == {"in_flight": 2, "limit": 2, "admitted": 3, "refused": 1}


@pytest.mark.parametrize("seconds, header", [(0, "1"), (0.2, "1"), (1, "1"), (1.5, "2"), (5, "5")])
def test_retry_after_is_whole_seconds_and_at_least_one(seconds, header):
    assert retry_after_header(seconds) == header


async def test_a_request_beyond_the_limit_gets_503_with_retry_after_and_its_handler_never_runs(monkeypatch):
    monkeypatch.setattr(app.runtime, "gate", Gate(limit=1))
    release = asyncio.Event()
    calls = []

    @guarded
    @admission.admitted
    async def handler(view, request):
        calls.append(request)
        await release.wait()
        return view.json({"ok": True})

    first = asyncio.create_task(handler(StubView(), "first"))
    await asyncio.sleep(0)
    status, body, headers = await handler(StubView(), "second")
    assert status == 503 and headers["Retry-After"] == "1" and "limit of 1" in body["error"]
    assert calls == ["first"]
    release.set()
    assert (await first)[0] == 200
    assert app.runtime.gate.in_flight == 0
    assert (await handler(StubView(), "third"))[0] == 200  # the slot was given back


async def test_an_unexpected_failure_is_a_503_with_retry_after():
    @guarded
    async def handler(view, request):
        raise ConnectionError("database is gone")

    status, body, headers = await handler(StubView(), SimpleNamespace(method="POST", path="/query"))
    assert (status, headers["Retry-After"]) == (503, "1")
    assert "ConnectionError" in body["error"]


# -- time-outs at the edge ----------------------------------------------------------------------------

class SlowBody:
    """A request whose client declared a body and never sends it."""

    content_type = "application/json"
    content_length = 10

    def __init__(self) -> None:
        self.content = SimpleNamespace(read=self._read)

    async def _read(self, n: int) -> bytes:
        await asyncio.Event().wait()
        return b""


async def test_a_body_that_does_not_arrive_in_time_is_a_408():
    with pytest.raises(RequestError) as info:
        await read_json(SlowBody(), 100, timeout=0.05)
    assert info.value.status == 408


def job() -> Job:
    return Job(question_id="0123456789abcdef", question_text="What is a stall?", original_answer=None,
               accepted_at=1.0, epoch=1)


@pytest.fixture
def fast_timeouts(monkeypatch):
    monkeypatch.setattr(query, "settings", dataclasses.replace(query.settings, enqueue_timeout_seconds=0.05,
                                                               db_statement_timeout_seconds=0.05))


async def test_an_enqueue_the_broker_does_not_take_in_time_is_unavailable(monkeypatch, fast_timeouts):
    monkeypatch.setattr(query.topics.pending, "send", hang)
    report = AsyncMock()
    monkeypatch.setattr(query, "report", report)
    before = app.runtime.query_counts["enqueue_timeout"]
    with pytest.raises(Unavailable) as info:
        await query.enqueue(job())
    assert (info.value.reason, info.value.question_id) == ("broker", "0123456789abcdef")
    assert app.runtime.query_counts["enqueue_timeout"] == before + 1
    report.assert_not_called()  # no status: reconciliation sees the question as lost and re-enqueues it
    assert app.runtime.enqueue_slots._value == ENQUEUE_SLOTS  # the slot was released


async def test_an_enqueue_in_time_sends_the_job_then_its_queued_status(monkeypatch, fast_timeouts):
    calls = []
    monkeypatch.setattr(query.topics.pending, "send", AsyncMock(side_effect=lambda **kw: calls.append("pending")))
    monkeypatch.setattr(query, "report", AsyncMock(side_effect=lambda j, stage: calls.append(stage)))
    await query.enqueue(job())
    assert calls == ["pending", "queued"]


async def test_an_acceptance_the_database_does_not_answer_in_time_is_unavailable(monkeypatch, fast_timeouts):
    monkeypatch.setattr(query.storage, "accept", hang)
    with pytest.raises(Unavailable) as info:
        await query.accept(Submission("0123456789abcdef", "q", None, 1.0))
    assert info.value.reason == "database"


async def test_an_acceptance_in_time_is_returned(monkeypatch, fast_timeouts):
    accepted = Acceptance(CREATED, "0123456789abcdef", "pending", 1, 1.0, None)
    monkeypatch.setattr(query.storage, "accept", AsyncMock(return_value=accepted))
    assert await query.accept(Submission("0123456789abcdef", "q", None, 1.0)) == accepted


# -- readiness -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("probe, state", [
    (None, "not probed yet"),
    (Probe(True, OK, 100.0), OK),
    (Probe(False, "unreachable: no answer within 1 s", 100.0), "unreachable: no answer within 1 s"),
    (Probe(True, OK, 95.0), "no probe result for 5.0 s"),  # a probe that stopped reporting proves nothing
])
def test_dependency_states(probe, state):
    assert dependency_states({"broker": probe}, now=100.0, max_age=4.0) == {"broker": state}


def test_describe_failure_says_time_out_or_the_error():
    assert describe_failure(TimeoutError(), 1.0) == "unreachable: no answer within 1 s"
    assert describe_failure(ConnectionRefusedError("refused"), 1.0) == "unreachable: ConnectionRefusedError: refused"


@pytest.mark.parametrize("checks, states, ready, down", [
    ({"recovered": True, "assigned": True}, {"broker": OK, "database": OK}, True, []),
    ({"recovered": True, "assigned": True}, {"broker": "unreachable", "database": OK}, False, ["broker"]),
    ({"recovered": False, "assigned": True}, {"broker": OK, "redis": "unreachable"}, False, ["recovered", "redis"]),
])
def test_health_body_is_ready_only_when_everything_holds_and_names_what_does_not(checks, states, ready, down):
    body = health_body(checks, states, {"in_flight": 0})
    assert (body["ready"], body["down"], body["dependencies"]) == (ready, down, states)


async def test_the_probe_reports_a_dependency_that_hangs_as_down_within_its_timeout():
    from qastream.services.cache import MemoryCache
    from qastream.services.health import DependencyProbe

    storage = SimpleNamespace(ping=hang)
    probe = DependencyProbe("kafka://127.0.0.1:9", storage, MemoryCache(60), interval=1.0, timeout=0.05)
    probe._broker = AsyncMock()
    probe.probes["broker"] = probe._broker
    await probe.probe_all()
    assert probe.states() == {"broker": OK, "database": "unreachable: no answer within 0.05 s"}


# -- database options ------------------------------------------------------------------------------------

def test_postgres_options_bound_connect_and_statements_and_keep_the_url_options():
    args = postgres_connect_args("postgresql+psycopg2://u@h/db?options=-csearch_path%3Dt_1", 5, 2.5)
    assert args["connect_timeout"] == 5 and args["tcp_user_timeout"] == 5000 and args["keepalives"] == 1
    assert args["options"] == "-csearch_path=t_1 -c statement_timeout=2500"


def test_postgres_options_without_statement_timeout_for_commands():
    assert postgres_connect_args("postgresql://u@h/db", 3, None)["options"] == ""


async def test_forwarded_requests_have_the_forward_timeout():
    from qastream.settings import Settings
    from qastream.streaming.broker import faust_options

    session = faust_options(Settings(forward_timeout_seconds=1.5))["HttpClient"]()
    try:
        assert session.timeout.total == 1.5
    finally:
        await session.close()


async def test_a_timer_tick_that_fails_is_logged_not_raised(caplog):
    from qastream.streaming.timers import survives_failures

    @survives_failures
    async def tick():
        raise ConnectionError("database unreachable")

    await tick()
    assert "tick failed" in caplog.text and "database unreachable" in caplog.text


async def test_bounded_turns_a_wait_past_its_limit_into_unavailable_naming_the_dependency():
    with pytest.raises(Unavailable) as info:
        async with admission.bounded("database", 0.01):
            await hang()
    assert info.value.reason == "database" and "0.01 s" in info.value.message
    async with admission.bounded("database", 1.0):
        pass  # in time: nothing raised
