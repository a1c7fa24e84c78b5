"""Issue 13: a finished question leaves the worker's status tables after its retention, and stays answered.

The retention is shortened to 2 s through the setting; reconciliation runs
every second so that a question it wrongly took for lost would be re-enqueued
within the test.
"""

from __future__ import annotations

import time
import uuid

from stackutil import Worker, wait_until


def table_entry(worker: Worker, table: str, key: str) -> object:
    code, body = worker.request("GET", f"/table/{table}/{key}/")
    return body if code == 200 else None


def test_a_finished_question_leaves_the_tables_and_is_answered_from_the_database(stack_env, start_worker_process):
    worker = start_worker_process(stack_env, status_retention_seconds="2", reconcile_interval_seconds="1",
                                  reconcile_after_seconds="1")
    question = f"Why does run {uuid.uuid4().hex[:8]} forget finished questions?"
    code, body = worker.query(question, question)
    assert code == 202, body
    qid = body["question_id"]
    wait_until(lambda: worker.status(qid)[1].get("status") == "completed", 90, "the question to complete")
    code, from_table = worker.status(qid)
    finished = time.time()
    assert code == 200 and from_table["source"] == "status_table", from_table
    assert table_entry(worker, "attempts", qid) == {"epoch": 1, "generations": 1, "retries": 0}

    wait_until(lambda: table_entry(worker, "status", qid) is None, 30, "the status entry to expire")
    assert time.time() - finished >= 1.0  # kept for (about) its retention first, not dropped on completion
    assert table_entry(worker, "attempts", qid) is None

    code, from_db = worker.status(qid)
    assert code == 200 and from_db["source"] == "database", from_db
    assert from_db["question_id"] == qid and from_db["status"] == "completed"
    assert from_db["epoch"] == 1 and from_db["question_text"] == question
    assert set(from_db["result"]) == set(from_table["result"])
    assert from_db["result"]["answer"] == from_table["result"]["answer"] == question

    # Several reconciliation rounds later it is still gone, finished once, and never re-enqueued.
    time.sleep(3.5)
    assert table_entry(worker, "status", qid) is None
    code, again = worker.status(qid)
    assert code == 200 and again["source"] == "database" and again["epoch"] == 1
    code, m = worker.request("GET", "/metrics")
    assert code == 200 and m["stalled_requeued"]["total"] == 0
    assert m["worker_counts"]["outcomes"] == {"completed": 1}
