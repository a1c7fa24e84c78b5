"""No question stranded (issue 11): a lost message, a scorer that raises, a broker restarted empty.

Deadlines and reconcile intervals are shortened through settings so that
recovery takes seconds; the assertions are about outcomes (every question
ends, exactly once), never about how fast.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from stackutil import Broker, Worker, broker_auto_creation, isolated_env, launch_llm, wait_until

from qastream.db import queries
from qastream.devtools.embedded import free_port, http_ok, log_file, start_tansu, stop, wait_for
from qastream.policy.ids import question_id
from qastream.services.storage import make_engine
from qastream.streaming.topic_admin import repair_topics

pytestmark = pytest.mark.integration

#: Deadlines of a few seconds: LLM time-out 3 s + margin 1 s; reconcile every second.
SHORT_DEADLINES = {"llm_timeout_seconds": "3", "deadline_margin_seconds": "1", "reconcile_interval_seconds": "1",
                   "reconcile_after_seconds": "2", "check_topics_interval_seconds": "1"}


def metrics(worker: Worker) -> dict:
    code, body = worker.request("GET", "/metrics")
    assert code == 200, body
    return body


def db_rows(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {"questions": connection.execute(text("SELECT COUNT(*) FROM questions")).scalar_one(),
                    "completed": connection.execute(
                        text("SELECT COUNT(*) FROM questions WHERE status = 'completed'")).scalar_one(),
                    "responses": connection.execute(
                        text("SELECT COUNT(DISTINCT question_id) FROM responses")).scalar_one(),
                    "response_rows": connection.execute(text("SELECT COUNT(*) FROM responses")).scalar_one()}
    finally:
        engine.dispose()


async def partition_counts(broker: Broker, prefix: str) -> dict[str, int]:
    """Partition count of every topic whose name starts with ``prefix`` (listing creates none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=f"{broker.host}:{broker.port}")
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)} if names else {}
    finally:
        await admin.close()


LAYOUT = {"questions-pending": 3, "questions-bulk": 3, "llm-responses-success": 3,
          "llm-responses-error-overload": 2, "llm-responses-error-quota": 2, "llm-responses-error-permanent": 1,
          "validated-responses": 3, "low-quality-responses": 1, "question-events": 3, "webhook-deliveries": 2}


def test_a_question_whose_pending_message_was_lost_completes_once_after_its_deadline(broker, stack_env, tmp_path,
                                                                                     start_worker_process):
    """Accepted and reported ``queued``, but never produced to questions-pending (the send failed after the
    event was written): the question completes after its queued deadline, in epoch 2, exactly once."""
    url = f"sqlite:///{tmp_path}/lost.db"
    worker = start_worker_process({**stack_env, "QASTREAM_DATABASE_URL": url}, **SHORT_DEADLINES)
    text = f"Where did message {uuid.uuid4().hex[:8]} go?"
    qid, now = question_id(text), time.time()
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            (accepted,) = queries.accept(connection, [queries.Submission(qid, text, text, now)])
        assert accepted.kind == queries.CREATED
    finally:
        engine.dispose()
    event = {"question_id": qid, "stage": "queued", "epoch": 1, "attempt": 1, "retries": 0, "accepted_at": now,
             "at": now}
    asyncio.run(produce(broker, stack_env["QASTREAM_TOPIC_PREFIX"] + "question-events", qid, event))
    wait_until(lambda: worker.status(qid)[1].get("status") == "completed", 120, "the lost question to complete")
    code, record = worker.request("GET", f"/table/status/{qid}/")
    assert code == 200 and record["epoch"] == 2  # re-enqueued once, in a new epoch
    assert db_rows(url) == {"questions": 1, "completed": 1, "responses": 1, "response_rows": 1}
    m = metrics(worker)
    assert m["stalled_requeued"] == {"total": 1, "by_stage": {"queued": 1}}
    assert m["worker_counts"]["outcomes"]["completed"] == 1


async def produce(broker: Broker, topic: str, key: str, value: dict) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=f"{broker.host}:{broker.port}")
    await producer.start()
    try:
        await producer.send_and_wait(topic, json.dumps(value).encode(), key=key.encode())
    finally:
        await producer.stop()


def test_a_scorer_that_raises_for_a_batch_strands_nobody(stack_env, tmp_path, artifacts):
    """The scorer raises for every batch holding a marked answer (a test-only launcher patches it): the
    marked questions are dead-lettered with the reason, their batch-mates complete, none is left pending."""
    from scorer_fault_worker import FAULT_MARKER

    port = free_port()
    env = {**stack_env, "QASTREAM_DATABASE_URL": f"sqlite:///{tmp_path}/scorer.db", "QASTREAM_WEB_PORT": str(port),
           "QASTREAM_WEB_HOST": "127.0.0.1", **{f"QASTREAM_{k.upper()}": v for k, v in SHORT_DEADLINES.items()}}
    launcher = Path(__file__).with_name("scorer_fault_worker.py")
    with log_file(str(artifacts), "scorer-fault-worker") as log:  # the child has its own descriptor
        process = subprocess.Popen([sys.executable, str(launcher), "worker", "-l", "info"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    worker = Worker(f"http://127.0.0.1:{port}", port, env, process)
    try:
        wait_for(lambda: http_ok(f"{worker.url}/health"), process, "the scorer-fault worker", timeout=180)
        token = uuid.uuid4().hex[:8]
        questions = [f"What does {FAULT_MARKER} item {i} of {token} mean?" if i % 5 == 0 else
                     f"What does item {i} of {token} mean?" for i in range(20)]
        ids = []
        for question in questions:
            code, body = worker.query(question, question)
            assert code == 202, body
            ids.append(body["question_id"])
        wait_until(lambda: metrics(worker)["questions_by_status"].get("pending", 0) == 0
                   and sum(metrics(worker)["questions_by_status"].values()) == 20, 120, "all 20 questions to end")
        m = metrics(worker)
        assert m["questions_by_status"] == {"completed": 16, "failed": 4}
        assert m["dead_letters_by_class"] == {"scoring": 4}
        wait_until(lambda: all(worker.status(q)[1].get("status") in ("completed", "failed") for q in ids), 30,
                   "the status table to agree with the database")
        for qid, question in zip(ids, questions):
            code, body = worker.status(qid)
            if FAULT_MARKER in question:
                assert body["status"] == "failed" and "injected scorer fault" in body["detail"]
            else:
                assert body["status"] == "completed" and body["result"]["score"] is not None
    finally:
        worker.stop()


def test_broker_restarted_empty_under_a_running_worker(artifacts, tmp_path, start_worker_process):
    """The broker loses every topic, offset and changelog while 60 questions are in flight: the worker
    keeps running, re-creates its topics with their configured partition counts, and every accepted
    question completes exactly once."""
    port = free_port()
    own = Broker(f"kafka://127.0.0.1:{port}", "127.0.0.1", port,
                 start_tansu("127.0.0.1", port, log=log_file(str(artifacts), "tansu-stranded")), artifacts)
    slow = launch_llm(artifacts, "llm-stranded", "--parallel", "16", "--latency", "1.0")
    try:
        url = f"sqlite:///{tmp_path}/restart-empty.db"
        env = {**isolated_env(own, slow, tmp_path / "var"), "QASTREAM_DATABASE_URL": url}
        # A queued deadline far beyond the run: the topic check, not the deadline, must find the lost backlog.
        overrides = {**SHORT_DEADLINES, "deadline_queued_seconds": "600"}
        worker = start_worker_process(env, llm_concurrency="16", **overrides)
        prefix = env["QASTREAM_TOPIC_PREFIX"]
        token = uuid.uuid4().hex[:8]
        for i in range(160):
            code, body = worker.query(f"Which log keeps entry {i} of {token}?", f"Which log keeps entry {i}?")
            assert code == 202, body
        wait_until(lambda: metrics(worker)["total_responses"] >= 16, 60, "some answers")
        assert metrics(worker)["total_responses"] < 100, "the run finished before the restart; make it longer"
        own.restart()  # memory storage: every topic, offset and changelog is gone
        wait_until(lambda: db_rows(url)["completed"] == 160, 300, "all 160 questions to complete after the restart")
        assert worker.process.poll() is None, "the worker stopped"
        assert db_rows(url) == {"questions": 160, "completed": 160, "responses": 160, "response_rows": 160}
        m = metrics(worker)
        assert m["questions_by_status"] == {"completed": 160}
        assert m["stalled_requeued"]["total"] >= 1
        counts = asyncio.run(partition_counts(own, prefix))
        assert {name.removeprefix(prefix): n for name, n in counts.items()} == LAYOUT
    finally:
        stop(slow.process, "llm")
        stop(own.process, "tansu")


def test_repair_topics_recreates_lost_and_auto_created_topics(artifacts):
    """Missing topics are created; one the broker auto-created with its default count is replaced on the
    development profile and only reported otherwise."""
    port = free_port()
    own = Broker(f"kafka://127.0.0.1:{port}", "127.0.0.1", port,
                 start_tansu("127.0.0.1", port, log=log_file(str(artifacts), "tansu-repair")), artifacts)
    try:
        layout = {"r-pending": 3, "r-permanent": 1}

        async def scenario() -> tuple:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{port}")
            with broker_auto_creation():  # what a client without qastream's fix does
                await producer.start()
                try:
                    await producer.send_and_wait("r-permanent", b"x")  # auto-created with Tansu's default
                finally:
                    await producer.stop()
            before = await partition_counts(own, "r-")
            kept = await repair_topics(own.url, layout, replace_mismatched=False)
            after_report = await partition_counts(own, "r-")
            replaced = await repair_topics(own.url, layout, replace_mismatched=True)
            return before, kept, after_report, replaced, await partition_counts(own, "r-"), \
                await repair_topics(own.url, layout, replace_mismatched=True)

        before, kept, after_report, replaced, after, again = asyncio.run(scenario())
        assert before == {"r-permanent": 4}
        assert kept == {"r-pending": None} and after_report == {"r-pending": 3, "r-permanent": 4}
        assert replaced == {"r-permanent": 4}
        assert after == layout
        assert again == {}
    finally:
        stop(own.process, "tansu")
