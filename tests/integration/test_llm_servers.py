"""Several LLM servers and the escalation model, on real components (issue 16).

Two embedded echo servers behind one worker: one is stopped mid-run and
started again on the same port; a server that lacks the model; an
escalation model that rewrites the answers that scored low.  The echo
backend answers with the question, so the reference answer sets the score:
the question itself scores ~1.0, an unrelated text scores low; the
escalation model is served with a fixed answer (``--fixed-answer``) equal to
the reference, so its regenerations pass.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from stackutil import LLMServer, Worker, isolated_env, launch_llm, submit, wait_until

from qastream.devtools.embedded import free_port, log_file, start_llm_server, stop

UNRELATED = "Glaciers carve valleys as compacted snow flows slowly downhill under its own weight."


def metrics(worker: Worker) -> dict[str, Any]:
    code, body = worker.request("GET", "/metrics")
    assert code == 200, body
    return body


def server_figures(worker: Worker, url: str) -> dict[str, Any]:
    """One server's entry of /metrics ``llm.servers``."""
    (server,) = [s for s in metrics(worker)["llm"]["servers"] if s["url"] == url]
    return server


def admin_stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/admin/stats", timeout=5) as response:
        return json.loads(response.read())


def settled(worker: Worker, total: int) -> bool:
    by_status = metrics(worker)["questions_by_status"]
    return by_status.get("pending", 0) == 0 and sum(by_status.values()) == total


def responses(url: str) -> dict[str, dict[str, Any]]:
    """Every stored answer by question id: the model that wrote it, its attempts, score and flag."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT question_id, model, processing_attempts, bert_score, low_quality "
                                           "FROM responses")).all()
        return {r[0]: {"model": r[1], "attempts": r[2], "score": r[3], "low_quality": bool(r[4])} for r in rows}
    finally:
        engine.dispose()


def start_echo(artifacts, port: int, name: str, *extra: str, model: str = "smollm2"):
    return start_llm_server("127.0.0.1", port, backend="echo", model=model, extra=["--test-faults", *extra],
                            log=log_file(str(artifacts), name))


# Two worker-visible outages of a server and up to 300 s for 300 questions on a busy machine.
@pytest.mark.timeout(600)
def test_a_server_killed_and_restarted_mid_run_loses_and_duplicates_nothing(broker, artifacts, tmp_path,
                                                                            start_worker_process):
    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    # Slow enough (2 calls at a time per server, 0.5 s each) that the run outlasts the outage.
    pace = ("--parallel", "4", "--latency", "0.5")
    process_a = start_echo(artifacts, port_a, "llm-pool-a", *pace)
    process_b = start_echo(artifacts, port_b, "llm-pool-b", *pace)
    try:
        env = {**isolated_env(broker, LLMServer(url_a, process_a), tmp_path / "var"),
               "QASTREAM_OLLAMA_URL": f"{url_a},{url_b}"}
        database = f"sqlite:///{tmp_path}/pool.db"
        worker = start_worker_process(env, database_url=database, llm_concurrency="2", breaker_threshold="3",
                                      breaker_cooldown_seconds="0.5", breaker_max_cooldown_seconds="2",
                                      retry_overload_delays="0.2,0.4,0.8,1.6,3.2,6.4")
        token = uuid.uuid4().hex[:8]
        ids = submit(worker, [(f"How does pooled part {i} of {token} work?",) * 2 for i in range(300)])
        wait_until(lambda: metrics(worker)["total_responses"] >= 20, 120, "the run to be under way")
        served_by_b_before = admin_stats(url_b)["completions"]
        stop(process_b, "llm b")
        wait_until(lambda: server_figures(worker, url_b)["breaker"]["state"] != "closed", 60,
                   "the stopped server's breaker to open")
        assert metrics(worker)["total_responses"] < 300, "the run ended before the outage; make it longer"
        assert metrics(worker)["circuit_breaker"]["state"] == "closed"  # the other server carries the load
        time.sleep(3)
        process_b = start_echo(artifacts, port_b, "llm-pool-b-restarted", *pace)
        wait_until(lambda: server_figures(worker, url_b)["breaker"]["state"] == "closed", 60,
                   "the restarted server's breaker to close")
        wait_until(lambda: settled(worker, 300), 300, "300 questions to end")
        m = metrics(worker)
        assert m["questions_by_status"] == {"completed": 300}
        stored = responses(database)
        assert sorted(stored) == sorted(ids)  # one answer each, none lost
        # Both servers served calls, the restarted one before and after its outage.
        assert admin_stats(url_a)["completions"] > 0
        assert served_by_b_before > 0 and admin_stats(url_b)["completions"] > 0
        figures_a, figures_b = server_figures(worker, url_a), server_figures(worker, url_b)
        assert figures_b["breaker"]["entered"].get("open", 0) >= 1
        assert figures_b["breaker"]["entered"].get("closed", 0) >= 1
        assert figures_a["breaker"]["entered"] == {}  # the live server's breaker never moved
        assert figures_b["failures_by_class"].get("overload", 0) >= 3
        wait_until(lambda: {s["status"] for s in (worker.status(q)[1] for q in ids[:30] + ids[-30:])}
                   == {"completed"}, 30, "the status table to agree with the database")
    finally:
        stop(process_a, "llm a")
        stop(process_b, "llm b")


@pytest.mark.timeout(300)
def test_a_model_missing_on_one_server_is_answered_by_the_other(broker, artifacts, tmp_path, start_worker_process):
    port = free_port()
    lacking_url = f"http://127.0.0.1:{port}"
    lacking = start_echo(artifacts, port, "llm-lacking", "--parallel", "8", model="another-model")
    having = launch_llm(artifacts, "llm-having", "--parallel", "8", "--latency", "0.05")
    try:
        # The server that lacks the model is listed first: idle servers are tried in list order.
        env = {**isolated_env(broker, having, tmp_path / "var"), "QASTREAM_OLLAMA_URL": f"{lacking_url},{having.url}"}
        database = f"sqlite:///{tmp_path}/missing.db"
        worker = start_worker_process(env, database_url=database)
        token = uuid.uuid4().hex[:8]
        ids = submit(worker, [(f"Where is missing part {i} of {token}?",) * 2 for i in range(40)])
        wait_until(lambda: settled(worker, 40), 180, "40 questions to end")
        m = metrics(worker)
        assert m["questions_by_status"] == {"completed": 40} and m["dead_letters"] == 0
        assert sorted(responses(database)) == sorted(ids)
        assert admin_stats(lacking_url).get("error_404", 0) >= 1
        assert admin_stats(lacking_url).get("completions", 0) == 0
        assert admin_stats(having.url)["completions"] >= 40
        assert server_figures(worker, lacking_url)["failures_by_class"].get("permanent", 0) >= 1
    finally:
        stop(lacking, "llm lacking")
        stop(having.process, "llm having")


@pytest.mark.timeout(300)
def test_low_scores_are_regenerated_by_the_escalation_model_and_the_database_says_which_wrote_what(
        broker, artifacts, tmp_path, start_worker_process):
    llm = launch_llm(artifacts, "llm-escalation", "--parallel", "8", "--latency", "0.05",
                     "--fixed-answer", f"big-model={UNRELATED}")
    try:
        database = f"sqlite:///{tmp_path}/escalation.db"
        worker = start_worker_process(isolated_env(broker, llm, tmp_path / "var"), database_url=database,
                                      escalation_model="big-model")
        token = uuid.uuid4().hex[:8]
        # The echo (the question) is far from this reference: only the escalation model's answer matches it.
        low = submit(worker, [(f"Which rule {i} of {token} applies?", UNRELATED) for i in range(20)])
        plain = submit(worker, [(f"How does plain part {i} of {token} work?",) * 2 for i in range(10)])
        wait_until(lambda: settled(worker, 30), 180, "30 questions to end")
        assert metrics(worker)["questions_by_status"] == {"completed": 30}
        stored = responses(database)
        assert {(stored[q]["model"], stored[q]["attempts"], stored[q]["low_quality"]) for q in low} == {
            ("big-model", 2, False)}
        assert all(stored[q]["score"] > 0.9 for q in low)
        assert {(stored[q]["model"], stored[q]["attempts"]) for q in plain} == {("smollm2", 1)}
        stats = admin_stats(llm.url)
        assert stats["completions:big-model"] == 20  # only regenerations went to the escalation model
        assert stats["completions:smollm2"] == 30
    finally:
        stop(llm.process, "llm")
