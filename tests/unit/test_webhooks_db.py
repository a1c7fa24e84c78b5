"""The statements on webhook_deliveries: one row per delivery id, one sender per attempt, one taker per lost one."""

from __future__ import annotations

from qastream.db import queries, webhooks
from qastream.db.queries import Submission
from qastream.db.webhooks import NewDelivery
from qastream.policy.webhooks import DeliveryState, EventKind

NOW = 1_700_000_000.0


def new(ident="a" * 32, subject="b1", body="{}", at=NOW):
    return NewDelivery(ident, EventKind.BATCH_COMPLETED, subject, "https://hooks.example/h", body, at)


def test_insert_keeps_the_first_row_of_an_id(engine):
    with engine.begin() as c:
        [(first, created)] = webhooks.insert(c, [new(body='{"n":1}')])
        assert created and first.state == DeliveryState.PENDING and first.attempts == 0
        [(again, created_again)] = webhooks.insert(c, [new(body='{"n":2}', at=NOW + 5)])
        assert not created_again and again.body == '{"n":1}' and again.created_at == NOW
        both = webhooks.insert(c, [new("c" * 32), new()])
        assert [(d.delivery_id, made) for d, made in both] == [("c" * 32, True), ("a" * 32, False)]


def test_each_attempt_is_claimed_once_and_a_delivered_one_never_again(engine):
    with engine.begin() as c:
        webhooks.insert(c, [new()])
        assert webhooks.claim(c, "a" * 32, 1, NOW + 1)
        assert not webhooks.claim(c, "a" * 32, 1, NOW + 2)          # a redelivered message of attempt 1
        assert webhooks.record(c, "a" * 32, 1, DeliveryState.PENDING, 500, "HTTP 500: boom", NOW + 2)
        assert webhooks.claim(c, "a" * 32, 2, NOW + 3)
        assert not webhooks.record(c, "a" * 32, 1, DeliveryState.DELIVERED, 200, None, NOW + 4)  # attempt 1 is over
        assert webhooks.record(c, "a" * 32, 2, DeliveryState.DELIVERED, 200, None, NOW + 4)
        assert not webhooks.claim(c, "a" * 32, 3, NOW + 5)          # delivered: nothing more is sent
        [d] = webhooks.of_subject(c, "b1")
    assert (d.state, d.attempts, d.last_status, d.last_error, d.delivered_at) == (
        DeliveryState.DELIVERED, 2, 200, None, NOW + 4)
    assert d.summary()["state"] == "delivered" and "body" not in d.summary()


def test_failed_is_final_and_keeps_the_last_error(engine):
    with engine.begin() as c:
        webhooks.insert(c, [new()])
        webhooks.claim(c, "a" * 32, 1, NOW)
        webhooks.record(c, "a" * 32, 1, DeliveryState.FAILED, None, "x" * 2000, NOW + 1)
        assert not webhooks.claim(c, "a" * 32, 2, NOW + 2)
        [d] = webhooks.of_subject(c, "b1", EventKind.BATCH_COMPLETED)
    assert d.state == DeliveryState.FAILED and len(d.last_error) == webhooks.MAX_ERROR_CHARS
    assert d.delivered_at is None


def test_of_subject_filters_by_kind(engine):
    with engine.begin() as c:
        webhooks.insert(c, [new(), NewDelivery("c" * 32, EventKind.BATCH_CANCELLED, "b1", "https://x.example/",
                                               "{}", NOW + 1)])
        assert [d.kind for d in webhooks.of_subject(c, "b1")] == ["batch.completed", "batch.cancelled"]
        assert [d.delivery_id for d in webhooks.of_subject(c, "b1", "batch.cancelled")] == ["c" * 32]
        assert webhooks.of_subject(c, "other") == []


def test_a_stale_pending_delivery_is_taken_by_one_caller(engine):
    with engine.begin() as c:
        webhooks.insert(c, [new(at=NOW), new("c" * 32, at=NOW + 100), new("d" * 32, at=NOW)])
        webhooks.claim(c, "d" * 32, 1, NOW)
        webhooks.record(c, "d" * 32, 1, DeliveryState.DELIVERED, 200, None, NOW)
        taken = webhooks.take_stale(c, before=NOW + 50, now=NOW + 60, limit=10)
        assert [d.delivery_id for d in taken] == ["a" * 32]        # not the fresh one, not the delivered one
        assert webhooks.take_stale(c, before=NOW + 50, now=NOW + 61, limit=10) == []  # taken already


def test_targets_are_the_webhook_urls_stored_on_questions(engine):
    with engine.begin() as c:
        queries.accept(c, [Submission("0" * 16, "q0", None, NOW, webhook_url="https://a.example/h"),
                           Submission("1" * 16, "q1", None, NOW)])
        assert webhooks.targets(c, ["0" * 16, "1" * 16, "2" * 16]) == {"0" * 16: "https://a.example/h"}
        # Asked again while in flight with another URL: the latest wins; without one, it stays.
        queries.accept(c, [Submission("0" * 16, "q0", None, NOW + 1, webhook_url="https://b.example/h")])
        queries.accept(c, [Submission("0" * 16, "q0", None, NOW + 2)])
        assert webhooks.targets(c, ["0" * 16]) == {"0" * 16: "https://b.example/h"}
        assert webhooks.targets(c, []) == {}
