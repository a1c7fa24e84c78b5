"""The pure rules of webhook deliveries: ids, the signature, the body, the back-off, the verdict, who is announced."""

from __future__ import annotations

import json

import pytest

from qastream.policy.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Backoff,
    DeliveryState,
    EventKind,
    Notification,
    Verdict,
    delivery_id,
    event_body,
    failure_data,
    judge,
    question_notifications,
    request_headers,
    retry_delay,
    signature,
    stale_after,
    verify,
)

#: The worked example of GitHub's webhook documentation: same algorithm, same header form.
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_signature_is_hmac_sha256_of_the_exact_body_bytes():
    assert signature(GITHUB_SECRET, GITHUB_BODY) == GITHUB_SIGNATURE


@pytest.mark.parametrize("secret, body, header, valid", [
    (GITHUB_SECRET, GITHUB_BODY, GITHUB_SIGNATURE, True),
    (GITHUB_SECRET, GITHUB_BODY + b" ", GITHUB_SIGNATURE, False),          # one byte more
    ("another secret", GITHUB_BODY, GITHUB_SIGNATURE, False),
    (GITHUB_SECRET, GITHUB_BODY, GITHUB_SIGNATURE.removeprefix("sha256="), False),  # the prefix is part of it
    (GITHUB_SECRET, GITHUB_BODY, GITHUB_SIGNATURE.upper(), False),
])
def test_verify(secret, body, header, valid):
    assert verify(secret, body, header) is valid


def test_headers_carry_signature_delivery_id_and_event():
    headers = request_headers("s", b"{}", "abc", EventKind.BATCH_COMPLETED, 3)
    assert headers[SIGNATURE_HEADER] == signature("s", b"{}")
    assert headers[DELIVERY_HEADER] == "abc"
    assert headers[EVENT_HEADER] == "batch.completed"
    assert headers["X-Qastream-Attempt"] == "3"
    assert headers["Content-Type"] == "application/json"


def test_delivery_id_is_stable_and_tells_kind_subject_and_epoch_apart():
    first = delivery_id(EventKind.QUESTION_COMPLETED, "0123456789abcdef")
    assert first == delivery_id("question.completed", "0123456789abcdef")  # a kind read back from the wire
    assert len(first) == 32 and int(first, 16) >= 0
    others = {delivery_id(EventKind.QUESTION_FAILED, "0123456789abcdef"),
              delivery_id(EventKind.QUESTION_COMPLETED, "0123456789abcdee"),
              delivery_id(EventKind.QUESTION_COMPLETED, "0123456789abcdef", epoch=2)}
    assert first not in others and len(others) == 3


def test_event_body_is_compact_sorted_json_with_the_envelope():
    body = event_body(EventKind.QUESTION_COMPLETED, "d1", "q1", {"answer": "été", "score": 0.5}, 1.23456)
    assert json.loads(body) == {"id": "d1", "type": "question.completed", "subject_id": "q1", "created_at": 1.235,
                                "data": {"answer": "été", "score": 0.5}}
    assert body == event_body("question.completed", "d1", "q1", {"score": 0.5, "answer": "été"}, 1.23456)
    assert " " not in body.replace("été", "")


BACKOFF = Backoff(max_attempts=5, base_seconds=2.0, max_seconds=10.0)


@pytest.mark.parametrize("attempt, delay", [
    (1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0),  # doubles, capped
    (5, None), (6, None),                     # the fifth was the last
])
def test_retry_delay(attempt, delay):
    assert retry_delay(BACKOFF, attempt) == delay


@pytest.mark.parametrize("attempt, status, refused, verdict", [
    (1, 200, False, Verdict(DeliveryState.DELIVERED)),
    (1, 204, False, Verdict(DeliveryState.DELIVERED)),
    (5, 299, False, Verdict(DeliveryState.DELIVERED)),        # a success on the last attempt
    (1, 500, False, Verdict(DeliveryState.PENDING, 2.0)),
    (3, 404, False, Verdict(DeliveryState.PENDING, 8.0)),
    (1, 302, False, Verdict(DeliveryState.PENDING, 2.0)),     # a redirect is not followed: a failure
    (2, None, False, Verdict(DeliveryState.PENDING, 4.0)),    # no answer (time-out, refused connection)
    (5, 500, False, Verdict(DeliveryState.FAILED)),           # out of attempts
    (1, None, True, Verdict(DeliveryState.FAILED)),           # the target was refused: no retry can help
])
def test_judge(attempt, status, refused, verdict):
    assert judge(BACKOFF, attempt, status, refused) == verdict


def test_one_attempt_policy_fails_at_once():
    assert judge(Backoff(max_attempts=1), 1, 503, False) == Verdict(DeliveryState.FAILED)


def test_a_live_delivery_is_never_taken_for_lost():
    assert stale_after(BACKOFF, timeout=3.0, margin=30.0) == 10.0 + 6.0 + 30.0


def test_only_questions_with_a_target_are_announced_and_the_last_outcome_wins():
    outcomes = [("q1", 1, {"n": 1}), ("q2", 1, {"n": 2}), ("q1", 2, {"n": 3})]
    notes = question_notifications(EventKind.QUESTION_COMPLETED, outcomes, {"q1": "https://a.example/h"})
    assert notes == [Notification(EventKind.QUESTION_COMPLETED, "q1", "https://a.example/h", {"n": 3}, 2)]
    assert question_notifications(EventKind.QUESTION_FAILED, outcomes, {}) == []


def test_failure_data():
    assert failure_data("q", "What?", "permanent", "404") == {
        "question_id": "q", "question_text": "What?", "status": "failed",
        "error": {"class": "permanent", "message": "404"}}
