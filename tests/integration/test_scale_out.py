"""Two workers in one consumer group: shared partitions, key routing, and failover after kill -9."""

from __future__ import annotations

import time
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import create_engine, text
from stackutil import Worker, isolated_env, launch_worker, wait_until

from qastream.settings import Settings


def owned_partitions(worker: Worker, app_id: str) -> dict[str, list[int]]:
    """Worker URL -> status-table partitions it actively owns, as the worker's router reports."""
    code, body = worker.request("GET", "/router/status/")
    assert code == 200, body
    return {url: parts.get(f"{app_id}-status-changelog", []) for url, parts in body.items()}


def split_between(workers: list[Worker], app_id: str) -> bool:
    """Both workers ready and each owning part of the status table."""
    for w in workers:
        if w.request("GET", "/health")[0] != 200:
            return False
    owners = owned_partitions(workers[0], app_id)
    return len([parts for parts in owners.values() if parts]) == len(workers)


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a raw key (as producers and table_route do)."""
    return DefaultPartitioner()(key.encode(), list(range(partitions)), list(range(partitions)))


def count_responses(url: str, ids: list[str]) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            binds = {f"id{i}": qid for i, qid in enumerate(ids)}
            placeholders = ", ".join(f":{name}" for name in binds)
            return connection.execute(
                text(f"SELECT COUNT(*) FROM responses WHERE question_id IN ({placeholders})"), binds).scalar_one()
    finally:
        engine.dispose()


def two_workers(broker, echo_llm, artifacts, tmp_path, database_url, test_name):
    env = {**isolated_env(broker, echo_llm, tmp_path / "shared"), "QASTREAM_DATABASE_URL": database_url}
    first = launch_worker(artifacts, test_name, {**env, "QASTREAM_DATA_DIR": str(tmp_path / "w1")})
    second = launch_worker(artifacts, test_name, {**env, "QASTREAM_DATA_DIR": str(tmp_path / "w2")})
    app_id = env["QASTREAM_APP_ID"]
    wait_until(lambda: split_between([first, second], app_id), 90, "both workers to own partitions")
    return first, second, app_id


def test_two_workers_share_partitions_and_answer_status_for_every_key_alike(
        broker, echo_llm, artifacts, tmp_path, postgres_url):
    first, second, app_id = two_workers(broker, echo_llm, artifacts, tmp_path, postgres_url, "two-workers")
    try:
        token = uuid.uuid4().hex[:8]
        ids = []
        for i in range(200):
            worker = first if i % 2 else second
            question = f"What does shard {i} of cluster {token} hold?"
            code, body = worker.query(question, question)
            assert code == 202, body
            ids.append(body["question_id"])
        wait_until(lambda: count_responses(postgres_url, ids) == 200, 180, "200 answers stored")
        for qid in ids:
            wait_until(lambda qid=qid: first.status(qid)[1].get("status") == "completed", 30, f"{qid} completed")
            code_1, on_first = first.status(qid)
            code_2, on_second = second.status(qid)
            assert code_1 == code_2 == 200
            # Routed to the owner: the same status-table entry, never a stale standby or a database fallback.
            assert on_first == on_second
            assert on_first["source"] == "status_table"
            assert on_first["result"]["processing_attempts"] == 1
        owners = owned_partitions(first, app_id)
        assert sorted(p for parts in owners.values() for p in parts) == list(range(Settings().partitions_events))
        calls = sum(w.request("GET", "/metrics")[1]["llm"]["calls"] for w in (first, second))
        assert calls == 200  # each question generated exactly once across the group
        assert count_responses(postgres_url, ids) == 200
    finally:
        first.stop()
        second.stop()


# Two workers start, one is killed, the group rebalances: waits of up to 240 s in a row.
@pytest.mark.timeout(600)
def test_failover_after_kill_9_every_question_completes(broker, artifacts, tmp_path, postgres_url):
    from stackutil import launch_llm

    from qastream.devtools.embedded import stop

    slow = launch_llm(artifacts, "llm-failover", "--parallel", "8", "--latency", "0.1")
    try:
        first, second, app_id = two_workers(broker, slow, artifacts, tmp_path, postgres_url, "failover")
        partitions = Settings().partitions_events
        victim_partitions = set(owned_partitions(first, app_id)[second.url])
        token = uuid.uuid4().hex[:8]
        ids = []
        for i in range(300):
            question = f"Which replica {i} of ring {token} leads?"
            code, body = first.query(question, question)
            assert code == 202, body
            ids.append(body["question_id"])
        victims = [qid for qid in ids if partition_of(qid, partitions) in victim_partitions]
        assert victims, "the killed worker owned none of the keys"
        wait_until(lambda: count_responses(postgres_url, ids) >= 60, 120, "the run to be under way")
        done_before = count_responses(postgres_url, victims)
        killed_at = time.monotonic()
        second.stop(hard=True)
        assert done_before < len(victims), "the killed worker's questions finished before the kill"
        wait_until(lambda: count_responses(postgres_url, victims) > done_before, 120,
                   "progress on the killed worker's partitions")
        resumed_after = time.monotonic() - killed_at
        wait_until(lambda: count_responses(postgres_url, ids) == 300, 240, "all 300 questions after failover")
        wait_until(lambda: set(owned_partitions(first, app_id).get(first.url, [])) == set(range(partitions)), 30,
                   "the survivor to own every partition")
        print(f"failover: progress on the killed worker's partitions resumed {resumed_after:.1f} s after kill -9")
        assert resumed_after < 60
        for qid in victims:
            wait_until(lambda qid=qid: first.status(qid)[1].get("status") == "completed", 30, f"{qid} completed")
        statuses = [first.status(qid)[1] for qid in ids]
        assert {s["status"] for s in statuses} == {"completed"}
        assert {s["result"]["processing_attempts"] for s in statuses} == {1}
        first.stop()
    finally:
        stop(slow.process, "llm")
