"""Batches and cancellation on Tansu, PostgreSQL, Redis and the embedded echo LLM.

The echo LLM answers with the question, and each reference here is the
question itself, so every generated question passes at the first attempt.
The cancellation test runs its own slow LLM (few slots, a long latency) so
that most of a 2,000-question batch is still waiting when it is cancelled,
and counts at the LLM server (``/admin/stats``: ``received``) the calls
the worker started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from stackutil import Worker, launch_llm, wait_until

from qastream.devtools.embedded import stop
from qastream.policy.ids import question_id


def run_cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "qastream", *args], env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"qastream {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result


def llm_calls(url: str) -> int:
    with urllib.request.urlopen(f"{url}/admin/stats", timeout=10) as response:
        return int(json.loads(response.read()).get("received", 0))


def batch_state(worker: Worker, batch_id: str) -> dict:
    code, body = worker.request("GET", f"/batches/{batch_id}")
    assert code == 200, body
    return body


def results(worker: Worker, batch_id: str) -> list[dict]:
    with urllib.request.urlopen(f"{worker.url}/batches/{batch_id}/results", timeout=60) as response:
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.read().decode().splitlines()]


def database_statuses(url: str, ids: list[str]) -> dict[str, str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return dict(connection.execute(text("SELECT question_id, status FROM questions "
                                                "WHERE question_id = ANY(:ids)"), {"ids": ids}).all())
    finally:
        engine.dispose()


def test_a_batch_from_the_cli_completes_with_a_results_file_of_its_custom_ids(
        stack_env, postgres_url, redis_url, start_worker_process, tmp_path: Path):
    worker = start_worker_process(stack_env, database_url=postgres_url, redis_url=redis_url,
                                  batch_check_interval_seconds="0.5")
    token = uuid.uuid4().hex[:8]
    questions = [f"What does step {i} of job {token} do?" for i in range(300)]
    lines = [json.dumps({"question_text": q, "original_answer": q, "id": f"row-{i}"}) for i, q in enumerate(questions)]
    lines.append(json.dumps({"question_text": questions[0], "original_answer": questions[0], "id": "again"}))
    dataset = tmp_path / "batch.jsonl"
    dataset.write_text("\n".join(lines) + "\n")

    submitted = run_cli(worker.env, "batch", "submit", str(dataset), "--url", worker.url, "--wait",
                        "--wait-timeout", "240")
    batch_id = submitted.stdout.strip()
    assert batch_id.startswith("batch_"), submitted.stdout
    assert "completed" in submitted.stderr
    state = batch_state(worker, batch_id)
    assert state["status"] == "completed" and state["finished_at"] >= state["created_at"]
    assert state["request_counts"] == {"total": 301, "completed": 301, "low_quality": 0, "failed": 0, "cancelled": 0}

    out = tmp_path / "results.jsonl"
    run_cli(worker.env, "batch", "results", batch_id, "--url", worker.url, "-o", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == [f"row-{i}" for i in range(300)] + ["again"]
    assert all(r["status"] == "completed" and r["answer"] and r["attempts"] == 1 and r["error"] is None
               for r in rows)
    assert rows[0]["question_id"] == rows[-1]["question_id"] == question_id(questions[0])
    assert database_statuses(postgres_url, [question_id(q) for q in questions]) == {
        question_id(q): "completed" for q in questions}

    code, metrics = worker.request("GET", "/metrics")
    assert metrics["llm"]["calls"] == 300  # the repeated line was generated once
    assert metrics["batches_by_status"] == {"completed": 1}

    # The same questions again: answered at once from the database, completed at acceptance.
    code, again = worker.request("POST", "/batches", {"questions": [{"question_text": q} for q in questions[:5]]})
    assert code == 202 and again["request_counts"]["completed"] == 5
    wait_until(lambda: batch_state(worker, again["batch_id"])["status"] == "completed", 30, "an answered batch")

    # A bad NDJSON line: 400 naming its line number; nothing stored.
    body = "\n".join([json.dumps({"question_text": "fine?"}), '{"question_text": ', json.dumps({"nope": 1})])
    code, refused = worker.request("POST", "/batches", raw=body.encode(), content_type="application/x-ndjson")
    assert code == 400 and [e["line"] for e in refused["invalid_lines"]] == [2, 3]
    code, listed = worker.request("GET", "/batches?limit=10")
    assert {b["batch_id"] for b in listed["batches"]} == {batch_id, again["batch_id"]}


def test_cancelling_a_batch_of_2000_behind_a_slow_llm(
        stack_env, postgres_url, redis_url, start_worker_process, artifacts):
    slow = launch_llm(artifacts, "llm-cancel", "--parallel", "4", "--latency", "1.0")
    try:
        worker = start_worker_process({**stack_env, "QASTREAM_OLLAMA_URL": slow.url}, database_url=postgres_url,
                                      redis_url=redis_url, llm_concurrency="4", batch_check_interval_seconds="0.5",
                                      batch_cancel_grace_seconds="12")
        token = uuid.uuid4().hex[:8]
        questions = [f"Which part {i} of machine {token} turns?" for i in range(2000)]
        code, accepted = worker.request("POST", "/batches", {"questions": [
            {"question_text": q, "original_answer": q, "custom_id": str(i)} for i, q in enumerate(questions)]},
            timeout=120)
        assert code == 202, accepted
        batch_id = accepted["batch_id"]
        wait_until(lambda: llm_calls(slow.url) >= 8, 60, "the first LLM calls")

        # A single question behind the backlog, cancelled by DELETE /query.
        lone = f"Is lone question {token} ever generated?"
        code, body = worker.query(lone, lone)
        assert code == 202 and body["status"] == "pending"
        code, body = worker.request("DELETE", f"/query/{question_id(lone)}")
        assert code == 200 and body == {"question_id": question_id(lone), "status": "cancelled", "cancelled": True}

        code, cancelled = worker.request("DELETE", f"/batches/{batch_id}", timeout=60)
        calls_at_cancel = llm_calls(slow.url)
        assert code == 200 and cancelled["status"] == "cancelling"
        assert cancelled["request_counts"]["cancelled"] >= 2000 - calls_at_cancel - 4

        # Calls in flight finish (1 s each); nothing starts afterwards.
        time.sleep(4.0)
        assert llm_calls(slow.url) == calls_at_cancel
        wait_until(lambda: batch_state(worker, batch_id)["status"] == "cancelled", 60, "the batch to end cancelled")
        counts = batch_state(worker, batch_id)["request_counts"]
        assert counts["total"] == 2000 and counts["failed"] == 0
        assert counts["completed"] + counts["cancelled"] == 2000
        assert counts["completed"] <= calls_at_cancel and counts["cancelled"] >= 2000 - calls_at_cancel
        time.sleep(2.0)
        assert llm_calls(slow.url) == calls_at_cancel

        # A second DELETE answers the same state; the results say which were generated.
        code, again = worker.request("DELETE", f"/batches/{batch_id}")
        assert code == 200 and again["status"] == "cancelled" and again["request_counts"] == counts
        rows = results(worker, batch_id)
        assert len(rows) == 2000 and [r["custom_id"] for r in rows] == [str(i) for i in range(2000)]
        assert sum(r["status"] == "cancelled" for r in rows) == counts["cancelled"]
        assert all(r["answer"] for r in rows if r["status"] == "completed")

        statuses = database_statuses(postgres_url, [question_id(q) for q in questions] + [question_id(lone)])
        assert "pending" not in statuses.values() and statuses[question_id(lone)] == "cancelled"
        code, status = worker.status(question_id(lone))
        assert code == 200 and status["status"] == "cancelled"
        code, metrics = worker.request("GET", "/metrics")
        assert metrics["questions_by_status"].get("cancelled") == counts["cancelled"] + 1
        assert metrics["batches_by_status"] == {"cancelled": 1}
        code, prometheus = 200, urllib.request.urlopen(f"{worker.url}/metrics/prometheus", timeout=10).read().decode()
        assert 'qastream_db_batches{status="cancelled"} 1.0' in prometheus
    finally:
        stop(slow.process, "llm server")
