"""Webhooks on a real worker (issue 15, item 4): Tansu, PostgreSQL, the echo LLM server, local receivers.

The receivers run on 127.0.0.1, which the worker is told to allow
(``QASTREAM_WEBHOOK_ALLOWED_HOSTS``).  One answers 500 three times per
delivery and then 200; one always 500; one never answers.  While they
misbehave, questions without webhooks must complete as fast as before: the
deliveries topic parks its waits and runs its attempts as bounded tasks, so
nothing of it holds a stage.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from typing import Any, Iterator

import pytest
from sqlalchemy import create_engine, text
from stackutil import WebhookReceiver, Worker, wait_until

from qastream.policy.webhooks import EVENT_HEADER, SIGNATURE_HEADER, delivery_id, verify

pytestmark = pytest.mark.integration

SECRET = "integration-secret"
MAX_ATTEMPTS = 4
TIMEOUT_SECONDS = 2.0
#: Waits of 1, 2 and 4 s between the four attempts: long enough that a batch of plain questions runs meanwhile.
BACKOFF_BASE, BACKOFF_MAX = 1.0, 4.0


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    started = WebhookReceiver()
    started.start()
    yield started
    started.stop()


#: The worker settings of every test here (QASTREAM_ + the key upper-cased).
WEBHOOK_SETTINGS = {"webhook_secret": SECRET, "webhook_allowed_hosts": "127.0.0.1",
                    "webhook_max_attempts": str(MAX_ATTEMPTS), "webhook_timeout_seconds": str(TIMEOUT_SECONDS),
                    "webhook_backoff_base_seconds": str(BACKOFF_BASE), "webhook_backoff_max_seconds": str(BACKOFF_MAX)}


@pytest.fixture
def worker(stack_env: dict[str, str], postgres_url: str, start_worker_process: Any) -> Worker:
    return start_worker_process(stack_env, database_url=postgres_url, **WEBHOOK_SETTINGS)


def ask(worker: Worker, text_: str, webhook: str | None = None) -> str:
    body: dict[str, Any] = {"question_text": text_, "original_answer": text_}
    if webhook is not None:
        body["webhook_url"] = webhook
    status, answer = worker.request("POST", "/query", body)
    assert status == 202, answer
    return answer["question_id"]


def latencies(worker: Worker, ids: list[str], timeout: float = 120) -> list[float]:
    """Wait until every question is completed; each one's total processing time, seconds."""
    done: dict[str, float] = {}

    def all_done() -> bool:
        for qid in ids:
            if qid not in done:
                code, body = worker.status(qid)
                if code == 200 and body.get("status") == "completed":
                    done[qid] = body["result"]["total_processing_time_ms"] / 1000.0
        return len(done) == len(ids)

    wait_until(all_done, timeout, f"{len(ids)} questions to complete")
    return [done[qid] for qid in ids]


def plain_batch(worker: Worker, token: str, n: int) -> list[float]:
    return latencies(worker, [ask(worker, f"What does plain component {i} of run {token} do?") for i in range(n)])


def delivery_row(postgres_url: str, ident: str) -> dict[str, Any]:
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(text("SELECT * FROM webhook_deliveries WHERE delivery_id = :d"),
                                     {"d": ident}).mappings().first()
    finally:
        engine.dispose()
    return dict(row) if row else {}


def test_webhook_url_is_checked_at_submission(worker: Worker) -> None:
    for url, fragment in (("http://10.0.0.1/h", "private"), ("ftp://hooks.example.com/", "http or https"),
                          ("http://localhost:1/h", "local name")):
        status, body = worker.request("POST", "/query", {"question_text": f"Refused {uuid.uuid4().hex}?",
                                                         "webhook_url": url})
        assert status == 400 and fragment in body["error"], body


def test_a_flaky_receiver_gets_one_signed_event_on_the_fourth_attempt_and_the_graph_does_not_slow(
        worker: Worker, receiver: WebhookReceiver, postgres_url: str) -> None:
    token = uuid.uuid4().hex[:8]
    baseline = plain_batch(worker, token + "a", 10)

    flaky_q = ask(worker, f"What does flaky receiver {token} get?", receiver.url("/flaky"))
    dead_q = ask(worker, f"What does dead receiver {token} get?", receiver.url("/dead"))
    failed_q = ask(worker, f"What does a failed question {token} announce? [[fail:404]]", receiver.url("/flaky"))
    latencies(worker, [flaky_q, dead_q])
    flaky_id = delivery_id("question.completed", flaky_q)
    dead_id = delivery_id("question.completed", dead_q)
    wait_until(lambda: len(receiver.of(flaky_id)) >= 1 and len(receiver.of(dead_id)) >= 1, 30,
               "the first attempts")
    # The receivers are failing now: questions without webhooks go through at their usual speed.
    during = plain_batch(worker, token + "b", 10)
    assert delivery_row(postgres_url, dead_id)["state"] == "pending", "the batch did not overlap the failures"
    assert max(during) <= 3 * max(baseline) + 2.0, (baseline, during)
    assert statistics.median(during) <= 3 * statistics.median(baseline) + 1.0, (baseline, during)

    wait_until(lambda: delivery_row(postgres_url, flaky_id).get("state") == "delivered", 60, "the flaky delivery")
    arrivals = receiver.of(flaky_id)
    assert [(a.attempt, a.status) for a in arrivals] == [(1, 500), (2, 500), (3, 500), (4, 200)]
    assert len({a.body for a in arrivals}) == 1  # every attempt sent the same bytes
    for a in arrivals:
        assert verify(SECRET, a.body, a.headers[SIGNATURE_HEADER])
        assert a.headers[EVENT_HEADER] == "question.completed"
    event = json.loads(arrivals[-1].body)
    assert event["id"] == flaky_id and event["type"] == "question.completed" and event["subject_id"] == flaky_q
    assert event["data"]["question_id"] == flaky_q and event["data"]["answer"]
    row = delivery_row(postgres_url, flaky_id)
    assert (row["attempts"], row["last_status"], row["last_error"]) == (4, 200, None) and row["delivered_at"]

    wait_until(lambda: delivery_row(postgres_url, dead_id).get("state") == "failed", 60, "the dead delivery to fail")
    row = delivery_row(postgres_url, dead_id)
    assert (row["attempts"], row["last_status"]) == (MAX_ATTEMPTS, 500) and "receiver says no" in row["last_error"]
    assert len(receiver.of(dead_id)) == MAX_ATTEMPTS

    failed_id = delivery_id("question.failed", failed_q)
    wait_until(lambda: delivery_row(postgres_url, failed_id).get("state") == "delivered", 60, "the failed question's event")
    failed_event = json.loads(receiver.of(failed_id)[-1].body)
    assert failed_event["type"] == "question.failed" and failed_event["data"]["error"]["class"] == "permanent"
    time.sleep(BACKOFF_MAX + 1)  # longer than the longest back-off: nothing more arrives for a delivered event
    assert len(receiver.of(flaky_id)) == 4 and sum(a.status == 200 for a in receiver.of(flaky_id)) == 1


def test_a_receiver_that_never_answers_slows_no_question_and_ends_failed(
        worker: Worker, receiver: WebhookReceiver, postgres_url: str) -> None:
    token = uuid.uuid4().hex[:8]
    baseline = plain_batch(worker, token + "a", 10)
    hung = [ask(worker, f"What does hung receiver {i} of {token} get?", receiver.url("/hang")) for i in range(6)]
    latencies(worker, hung)
    ids = [delivery_id("question.completed", qid) for qid in hung]
    wait_until(lambda: sum(len(receiver.of(i)) for i in ids) >= 4, 30, "attempts to hang")
    during = plain_batch(worker, token + "b", 10)
    assert all(delivery_row(postgres_url, i)["state"] == "pending" for i in ids), "no overlap with the hangs"
    assert max(during) <= 3 * max(baseline) + 2.0, (baseline, during)

    # Each attempt costs one time-out; with 4 slots for the host, 6 deliveries x 4 attempts end within ~30 s.
    wait_until(lambda: all(delivery_row(postgres_url, i).get("state") == "failed" for i in ids), 120,
               "the hung deliveries to fail")
    for ident in ids:
        row = delivery_row(postgres_url, ident)
        assert row["attempts"] == MAX_ATTEMPTS and row["last_status"] is None
        assert f"no answer within {TIMEOUT_SECONDS:g} s" in row["last_error"]


# Two worker starts (each up to ~30 s on a busy machine) and the waits below.
@pytest.mark.timeout(400)
def test_a_worker_killed_during_the_retries_delivers_once_after_restart(
        stack_env: dict[str, str], postgres_url: str, start_worker_process: Any, receiver: WebhookReceiver) -> None:
    # A quick sweep, so a delivery whose attempt died with the worker is sent again within seconds.
    overrides = {**WEBHOOK_SETTINGS, "database_url": postgres_url, "reconcile_interval_seconds": "2",
                 "deadline_margin_seconds": "2"}
    first = start_worker_process(stack_env, **overrides)
    token = uuid.uuid4().hex[:8]
    qid = ask(first, f"What survives kill -9 {token}?", receiver.url("/flaky"))
    ident = delivery_id("question.completed", qid)
    wait_until(lambda: len(receiver.of(ident)) >= 1, 60, "the first attempt")
    first.stop(hard=True)
    restarted = start_worker_process(stack_env, **overrides)
    wait_until(lambda: delivery_row(postgres_url, ident).get("state") == "delivered", 120,
               "the delivery to resume after the restart")
    time.sleep(BACKOFF_MAX + 1)
    arrivals = receiver.of(ident)
    attempts = [a.attempt for a in arrivals]
    assert len(attempts) == len(set(attempts)), attempts       # no attempt was made twice
    assert [a.status for a in arrivals].count(200) == 1 and arrivals[-1].status == 200, arrivals
    assert all(verify(SECRET, a.body, a.headers[SIGNATURE_HEADER]) for a in arrivals)
    # The replayed stages scheduled the event again: that added no attempt and skipped no wait.
    for earlier, later in zip(arrivals, arrivals[1:]):
        wait = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (earlier.attempt - 1))
        assert later.at - earlier.at >= 0.9 * wait, [(a.attempt, a.status, round(a.at, 2)) for a in arrivals]
    assert restarted.status(qid)[1]["status"] == "completed"
