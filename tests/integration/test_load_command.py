"""``qastream load`` against a real worker: over HTTP and straight to the pending topic.

The echo LLM answers with the question, and each reference here is the
question itself, so every accepted question passes at the first attempt and
the counts in the summary are exact.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from stackutil import Worker

from qastream.policy.ids import question_id

MAX_CHARS = "200"


def run_cli(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    result = subprocess.run([sys.executable, "-m", "qastream", *args], env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"qastream {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result.stdout


def write_dataset(path: Path, token: str) -> list[str]:
    """Five good questions, a repeat, one over the length limit and a broken line; returns the good ids."""
    questions = [f"What does stage {i} of pipeline {token} do?" for i in range(5)]
    lines = [json.dumps({"question_text": q, "original_answer": q}) for q in questions]
    lines.append(json.dumps({"question": questions[0], "answer": questions[0]}))
    lines.append(json.dumps({"question": "Why " + "very " * 60 + token + "?", "answer": "too long"}))
    lines.append("{not json")
    path.write_text("\n".join(lines) + "\n")
    return [question_id(q) for q in questions]


def line(output: str, label: str) -> str:
    """The count on the summary line that starts with ``label``."""
    match = re.search(rf"^\s*{re.escape(label)}\s+(\d+)", output, re.M)
    assert match, f"no {label!r} line in:\n{output}"
    return match.group(1)


@pytest.fixture
def worker(stack_env, start_worker_process) -> Worker:
    return start_worker_process(stack_env, max_question_chars=MAX_CHARS)


def test_load_over_http_then_again_from_cache(worker: Worker, tmp_path: Path):
    ids = write_dataset(tmp_path / "qs.jsonl", uuid.uuid4().hex[:8])
    first = run_cli(worker.env, "load", str(tmp_path / "qs.jsonl"), "--via", "http", "--url", worker.url,
                    "--concurrency", "1", "--rate", "50", "--arrival", "poisson", "--wait", "--wait-timeout", "90")
    assert line(first, "accepted") == "5"
    assert line(first, "already in flight") == "1"
    assert line(first, "rejected") == "1"
    assert "HTTP 400: question_text is longer than 200 characters" in first
    assert "invalid JSON line" in first and line(first, "rows skipped by the reader") == "1"
    assert "acceptance latency ms: p50" in first
    assert "completed 5" in first
    for qid in ids:
        assert worker.status(qid)[1]["status"] == "completed"

    again = run_cli(worker.env, "load", str(tmp_path / "qs.jsonl"), "--url", worker.url)
    assert line(again, "accepted") == "0"
    assert line(again, "cache hits") == "6"

    report = json.loads(run_cli(worker.env, "report", "--json"))
    assert report["total_responses"] == 5 and report["attempts_distribution"]["1"] == 5
    assert report["below_threshold"] == 0 and report["low_quality"] == 0


def test_load_via_kafka_writes_the_database_then_the_topic(worker: Worker, tmp_path: Path):
    ids = write_dataset(tmp_path / "qs.jsonl", uuid.uuid4().hex[:8])
    out = run_cli(worker.env, "load", str(tmp_path / "qs.jsonl"), "--via", "kafka", "--limit", "7", "--wait",
                  "--wait-timeout", "90")
    assert line(out, "accepted") == "5"
    assert line(out, "already in flight") == "1"
    assert line(out, "rejected") == "1" and "invalid: question_text is longer than 200 characters" in out
    assert "completed 5" in out
    code, body = worker.status(ids[0])
    assert code == 200 and body["status"] == "completed" and body["result"]["score"] > 0.9
    # Known to the database now: the same load is answered without producing again.
    again = run_cli(worker.env, "load", str(tmp_path / "qs.jsonl"), "--via", "kafka")
    assert line(again, "accepted") == "0" and "database 6" in again
