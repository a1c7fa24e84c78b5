"""/metrics, /metrics/prometheus, /answers/latest, /openapi.json and `qastream inspect` on a running worker."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid

from prometheus_client.parser import text_string_to_metric_families
from stackutil import wait_until


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url + "/metrics/prometheus", timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_figures_of_a_running_worker(stack_env, redis_url, start_worker_process):
    worker = start_worker_process(stack_env, redis_url=redis_url)
    token = uuid.uuid4().hex[:8]
    questions = [f"What is the job of stage {i} in run {token}?" for i in range(3)]
    ids = [worker.query(q, q)[1]["question_id"] for q in questions]
    wait_until(lambda: all(worker.status(qid)[1].get("status") == "completed" for qid in ids), 90,
               "three questions to complete")

    code, m = worker.request("GET", "/metrics")
    assert code == 200
    assert m["total_responses"] == 3 and m["questions_by_status"] == {"completed": 3}
    assert m["throughput"]["completed_per_minute"]["1m"] == 3.0
    assert m["throughput"]["completed_per_minute"]["5m"] == 0.6
    assert m["llm"]["latency_ms"]["count"] == 3 and m["llm"]["latency_ms"]["p50"] > 0
    assert m["worker_counts"]["outcomes"] == {"completed": 3}
    assert m["errors_by_class"] == {} and m["circuit_breaker"]["state"] == "closed"
    # One worker owns every partition of every topic of the graph; once committed, nothing lags.  The lag
    # timer (QASTREAM_LAG_INTERVAL_SECONDS) takes the figures in the background: wait for one taken after
    # the three questions were enqueued.
    def pending_topic(lag):
        return next((name for name in lag["topics"] if name.endswith("questions-pending")), None)

    def lag_after_the_questions():
        lag = worker.request("GET", "/metrics")[1]["consumer_lag"]
        pending = pending_topic(lag)
        return pending is not None and sum(p["highwater"] or 0 for p in lag["topics"][pending]["partitions"].values()) >= 3

    wait_until(lag_after_the_questions, 30, "the lag timer to see the questions")
    lag = worker.request("GET", "/metrics")[1]["consumer_lag"]
    assert lag["age_seconds"] is not None and lag["age_seconds"] < 30
    pending = pending_topic(lag)
    assert len(lag["topics"]) == 10  # the graph's topics: both lanes, the error topics, events, webhooks
    assert set(lag["topics"][pending]["partitions"]) == {"0", "1", "2"}
    assert sum(p["highwater"] for p in lag["topics"][pending]["partitions"].values()) >= 3
    wait_until(lambda: worker.request("GET", "/metrics")[1]["consumer_lag"]["total"] == 0, 30,
               "the consumer to commit everything")

    families = scrape(worker.url)
    assert all(name.startswith("qastream_") for name in families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("qastream_llm_call_duration_seconds_count", (("outcome", "ok"),))] == 3
    assert samples[("qastream_question_duration_seconds_count", ())] == 3
    assert samples[("qastream_answer_score_bucket", (("le", "+Inf"),))] == 3
    assert samples[("qastream_queries_total", (("outcome", "accepted"),))] == 3
    assert samples[("qastream_outcomes_total", (("outcome", "completed"),))] == 3
    assert samples[("qastream_db_questions", (("status", "completed"),))] == 3
    assert samples[("qastream_circuit_breaker_state", (("state", "closed"),))] == 1
    assert any(name == "qastream_consumer_lag" and dict(labels)["topic"] == pending for name, labels in samples)

    code, latest = worker.request("GET", "/answers/latest?limit=2")
    assert code == 200 and len(latest["answers"]) == 2
    assert {a["question_id"] for a in latest["answers"]} <= set(ids)
    code, document = worker.request("GET", "/openapi.json")
    assert code == 200 and "/metrics/prometheus" in document["paths"]

    # qastream inspect: the four records side by side, from the worker's tables, SQLite and Redis.
    result = subprocess.run([sys.executable, "-m", "qastream", "inspect", ids[0], "--json"], env=worker.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status_table"]["state"] == "completed"
    assert report["attempts_table"] == {"epoch": 1, "generations": 1, "retries": 0}
    assert report["database"]["status"] == "completed"
    assert report["database"]["result"]["answer"] == questions[0]
    assert report["cache"]["key"] == f"response:{ids[0]}" and report["cache"]["ttl_seconds"] > 0
    assert "agree: completed" in report["agreement"]
    text = subprocess.run([sys.executable, "-m", "qastream", "inspect", ids[0]], env=worker.env,
                          capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "status table" in text.stdout and "attempts table" in text.stdout and "cache" in text.stdout
