"""qastream.runtime: one worker state owned by the app, created with it and anew at start."""

from __future__ import annotations

import faust

from qastream.app import app
from qastream.runtime import ENQUEUE_SLOTS, Runtime
from qastream.settings import Settings


def test_a_runtime_takes_its_breaker_and_gate_from_the_settings():
    runtime = Runtime.from_settings(Settings(breaker_threshold=7, breaker_cooldown_seconds=2.0,
                                             breaker_max_cooldown_seconds=9.0, max_requests_in_flight=3))
    (server,) = runtime.llm_servers
    assert (server.breaker.threshold, server.breaker.base_cooldown, server.breaker.max_cooldown) == (7, 2.0, 9.0)
    assert runtime.gate.limit == 3
    assert runtime.enqueue_slots._value == ENQUEUE_SLOTS
    assert runtime.counts.snapshot()["outcomes"] == {} and not runtime.query_counts and not runtime.released


def test_a_new_runtime_forgets_what_the_last_one_counted():
    app.runtime.query_counts["accepted"] += 1
    app.runtime.counts.record_failed("permanent")
    app.runtime.llm_held += 1
    app.runtime.llm_servers[0].breaker.record_failure()
    app.runtime = app.runtime_factory()
    assert not app.runtime.query_counts and app.runtime.counts.snapshot()["dead_letters_by_class"] == {}
    assert app.runtime.llm_held == 0 and app.runtime.llm_servers[0].breaker.failures == 0


def test_each_llm_server_has_its_own_breaker_and_slots_for_each():
    runtime = Runtime.from_settings(Settings(ollama_url="http://a:1, http://b:2/", llm_concurrency=3))
    assert [s.url for s in runtime.llm_servers] == ["http://a:1", "http://b:2"]
    assert runtime.llm_servers[0].breaker is not runtime.llm_servers[1].breaker
    assert runtime.llm_slots.slots == 6


async def test_a_worker_start_renews_the_runtime(monkeypatch):
    before = app.runtime
    app.runtime.query_counts["cache"] += 1
    monkeypatch.setattr(app, "topic_layout", {})
    monkeypatch.setattr(faust.App, "on_first_start", _nothing)  # no broker in unit tests
    await app.on_first_start()
    assert app.runtime is not before and not app.runtime.query_counts


async def _nothing(self) -> None:
    return None
