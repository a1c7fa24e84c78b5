"""Issue 15's first acceptance test: a 500-question batch with a webhook survives a ``kill -9`` of its worker.

Tansu, PostgreSQL, Redis and an echo LLM server of its own, slow enough
(``SLOTS`` calls at once, ``LATENCY`` seconds each: about 25 s for the whole
batch) that the worker is killed with SIGKILL while the batch is part way
through, then started again on the same consumer group, database and
broker.  The echo LLM answers with the question and each reference is the
question itself, so every question passes its first attempt: any second
generation, second epoch or second answer is the restart's doing.

What must hold, as if the worker had never died:

* every question ends exactly once: the database holds 500 completed
  questions in their first epoch with one answer each from one attempt; the
  status events show one terminal version per question; a question is
  generated a second time only if the kill caught it generating (its
  ``generating`` event before the kill, no ``scoring`` one), and the LLM
  server counts one call per question plus those and the few calls whose
  events died with the worker;
* the batch ends ``completed`` with request counts adding up to 500, and
  ``GET /batches/{id}/results`` streams 500 lines carrying the custom ids in
  line order, each with an answer;
* the receiver gets ``batch.completed`` once, signed (HMAC-SHA256 of the
  exact body with the secret, checked here independently of qastream's
  code), its body carrying the same counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import urllib.request
import uuid
from collections import Counter
from typing import Any, Iterator

import pytest
from sqlalchemy import create_engine, text
from stackutil import Broker, WebhookReceiver, Worker, isolated_env, launch_llm, read_events, wait_until

from qastream.devtools.embedded import stop
from qastream.policy.ids import question_id

pytestmark = pytest.mark.integration

QUESTIONS = 500
#: The LLM server's slots and the worker's LLM concurrency: at most this many calls are in flight at the kill.
SLOTS = 8
#: Seconds per LLM call: 500 / 8 x 0.4 s = 25 s of generation, time enough to kill the worker part way.
LATENCY = 0.4
#: The worker is killed once this many questions are stored (and the test checks it was before the last).
KILL_AFTER = 150
SECRET = "acceptance-secret"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    started = WebhookReceiver()
    started.start()
    yield started
    started.stop()


def llm_stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/admin/stats", timeout=10) as response:
        return json.loads(response.read())


def batch_state(worker: Worker, batch_id: str) -> dict[str, Any]:
    code, body = worker.request("GET", f"/batches/{batch_id}")
    assert code == 200, body
    return body


def results(worker: Worker, batch_id: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{worker.url}/batches/{batch_id}/results", timeout=60) as response:
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.read().decode().splitlines()]


def stored(postgres_url: str, ids: list[str]) -> list[Any]:
    """Each question's row joined to its answer, if any: (question_id, status, epoch, processing_attempts, answer)."""
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(
                "SELECT q.question_id, q.status, q.epoch, r.processing_attempts, r.answer FROM questions q "
                "LEFT JOIN responses r ON r.question_id = q.question_id WHERE q.question_id = ANY(:ids)"),
                {"ids": ids}).all())
    finally:
        engine.dispose()




# Two worker starts (each up to ~30 s on a busy machine), ~25 s of LLM time and the checks.
@pytest.mark.timeout(600)
def test_a_500_question_batch_with_a_webhook_survives_kill_9(
        broker: Broker, artifacts, postgres_url: str, redis_url: str, tmp_path, start_worker_process,
        receiver: WebhookReceiver) -> None:
    slow = launch_llm(artifacts, "llm-acceptance", "--parallel", str(SLOTS), "--latency", str(LATENCY))
    try:
        env = {**isolated_env(broker, slow, tmp_path / "var"), "QASTREAM_DATABASE_URL": postgres_url,
               "QASTREAM_REDIS_URL": redis_url, "QASTREAM_LLM_CONCURRENCY": str(SLOTS),
               "QASTREAM_BATCH_CHECK_INTERVAL_SECONDS": "0.5", "QASTREAM_WEBHOOK_SECRET": SECRET,
               "QASTREAM_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
        first = start_worker_process(env)
        token = uuid.uuid4().hex[:8]
        questions = [f"What does stage {i} of acceptance run {token} deliver?" for i in range(QUESTIONS)]
        ids = [question_id(q) for q in questions]
        # Custom ids whose text order is not the line order: the results must follow the lines.
        custom_ids = [f"line-{i}" for i in range(QUESTIONS)]
        code, accepted = first.request("POST", "/batches", {
            "questions": [{"question_text": q, "original_answer": q, "custom_id": c}
                          for q, c in zip(questions, custom_ids)],
            "webhook_url": f"http://127.0.0.1:{receiver.port}/hooks/batches", "metadata": {"run": token}},
            timeout=120)
        assert code == 202, accepted
        batch_id = accepted["batch_id"]
        assert accepted["request_counts"]["total"] == QUESTIONS and accepted["request_counts"]["completed"] == 0

        wait_until(lambda: batch_state(first, batch_id)["request_counts"]["completed"] >= KILL_AFTER, 180,
                   f"{KILL_AFTER} questions of the batch to be stored", interval=0.1)
        kill_time = time.time()  # the events' clock: what a stage reported before it, the first worker did
        first.stop(hard=True)
        at_kill = llm_stats(slow.url)
        killed_at = time.monotonic()
        done_at_kill = sum(row.status == "completed" for row in stored(postgres_url, ids))
        assert done_at_kill < QUESTIONS and at_kill["received"] < QUESTIONS, (
            f"the batch was over before the kill ({done_at_kill} stored, {at_kill['received']} LLM calls): "
            "it proves nothing")

        second = start_worker_process(env)
        wait_until(lambda: batch_state(second, batch_id)["status"] == "completed", 300,
                   "the batch to end completed after the restart", interval=0.5)
        finished = batch_state(second, batch_id)
        counts = finished["request_counts"]
        print(f"killed after {done_at_kill} stored answers and {at_kill['received']} LLM calls "
              f"({at_kill['received'] - at_kill.get('completions', 0)} in flight at the server); "
              f"restart to batch end {time.monotonic() - killed_at:.1f} s")

        # The batch: completed, its counts adding up, its results in line order.
        assert counts == {"total": QUESTIONS, "completed": QUESTIONS, "low_quality": 0, "failed": 0, "cancelled": 0}
        assert finished["finished_at"] >= finished["created_at"] and finished["metadata"] == {"run": token}
        rows = results(second, batch_id)
        assert len(rows) == QUESTIONS
        assert [r["custom_id"] for r in rows] == custom_ids
        assert [r["question_id"] for r in rows] == ids
        assert all(r["status"] == "completed" and r["answer"] and r["attempts"] == 1 and r["error"] is None
                   for r in rows), [r for r in rows if not (r["status"] == "completed" and r["answer"])][:5]

        # Every question ended once: one row each, completed in its first epoch, one answer from one attempt.
        rows_db = stored(postgres_url, ids)
        assert len(rows_db) == QUESTIONS and {r.question_id for r in rows_db} == set(ids)
        assert all(r.status == "completed" and r.epoch == 1 and r.processing_attempts == 1 and r.answer
                   for r in rows_db), [tuple(r) for r in rows_db if r.epoch != 1 or r.processing_attempts != 1][:5]

        # The status events: one terminal version per question.  A question is generated a second time only
        # if the kill caught it in flight: generating, not yet completed.  (Its `scoring` event may predate the
        # kill: the status table that generation checks is written from the events topic by its one writer,
        # and an event sent just before the kill can reach the table after the redelivered question was
        # checked.)  The LLM server saw one call per question, those repeats, and at most SLOTS calls whose
        # events died with the worker.
        events = asyncio.run(read_events(broker, env["QASTREAM_TOPIC_PREFIX"] + "question-events"))
        batch_ids = set(ids)
        mine = [e for e in events if e["question_id"] in batch_ids]
        terminal = {(e["question_id"], e["epoch"], e["attempt"]) for e in mine if e["stage"] in
                    ("completed", "failed", "cancelled")}
        assert sorted(terminal) == sorted((qid, 1, 1) for qid in ids)
        generations = Counter(e["question_id"] for e in mine if e["stage"] == "generating")
        assert set(generations) == batch_ids
        before = [e for e in mine if e["at"] < kill_time]
        completed_before = {e["question_id"] for e in before if e["stage"] == "completed"}
        in_flight = {e["question_id"] for e in before if e["stage"] == "generating"} - completed_before
        repeated = {qid: n for qid, n in generations.items() if n > 1}
        calls = llm_stats(slow.url)["received"]
        print(f"LLM calls {calls} for {QUESTIONS} questions, {sum(generations.values())} generating events; "
              f"{len(in_flight)} question(s) generating at the kill, {len(repeated)} generated again")
        assert all(n == 2 for n in repeated.values()), repeated
        assert set(repeated) <= in_flight, {qid: [(e["stage"], round(e["at"] - kill_time, 2)) for e in mine
                                                  if e["question_id"] == qid] for qid in set(repeated) - in_flight}
        assert QUESTIONS <= calls <= QUESTIONS + len(repeated) + SLOTS, f"{calls} LLM calls for {QUESTIONS} questions"

        # The webhook: batch.completed once, signed over the exact body, with the batch's counts.
        wait_until(lambda: batch_state(second, batch_id)["webhook"]["state"] == "delivered", 60,
                   "the batch.completed webhook to be delivered")
        delivery = batch_state(second, batch_id)["webhook"]["delivery"]
        assert (delivery["event"], delivery["attempts"], delivery["last_status"]) == ("batch.completed", 1, 200)
        time.sleep(2.0)  # four batch-timer ticks: a second delivery would have been sent by now
        arrivals = receiver.received()
        assert len(arrivals) == 1, [(a.headers.get("X-Qastream-Delivery"), a.headers.get("X-Qastream-Attempt"))
                                    for a in arrivals]
        arrival = arrivals[0]
        expected = "sha256=" + hmac.new(SECRET.encode(), arrival.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(arrival.headers["X-Qastream-Signature"], expected)
        assert arrival.headers["X-Qastream-Event"] == "batch.completed"
        event = json.loads(arrival.body)
        assert event["type"] == "batch.completed" and event["subject_id"] == batch_id
        assert event["id"] == arrival.headers["X-Qastream-Delivery"]
        assert event["data"]["status"] == "completed" and event["data"]["request_counts"] == counts
        assert event["data"]["metadata"] == {"run": token} and event["id"] == delivery["delivery_id"]
    finally:
        stop(slow.process, "llm server")
