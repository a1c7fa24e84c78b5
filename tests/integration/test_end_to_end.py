"""Questions over HTTP through the whole graph on Tansu, the echo LLM, the real scorer and a database.

The echo backend answers with the question itself, so a question whose
reference answer is its own text scores ~1.0 and passes at the first
attempt, and one with an unrelated reference fails every attempt and is kept
as low quality after the third.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest
import redis
from sqlalchemy import create_engine, text
from stackutil import Worker, isolated_env, launch_worker, wait_until

from qastream.policy.ids import question_id
from qastream.settings import Settings

UNRELATED = "Photosynthesis converts light energy into chemical energy stored in glucose molecules."
THRESHOLD = Settings().scorer_threshold


def make_questions(token: str, good: int, low: int) -> dict[str, tuple[str, str]]:
    """question_id -> (question, reference): ``good`` that pass, ``low`` that cannot."""
    questions = {}
    for i in range(good):
        text_ = f"What is the purpose of component {i} in system {token}?"
        questions[question_id(text_)] = (text_, text_)
    for i in range(low):
        text_ = f"Which algorithm sorts list {i} of batch {token} fastest?"
        questions[question_id(text_)] = (text_, UNRELATED)
    return questions


def submit_all(worker: Worker, questions: dict[str, tuple[str, str]]) -> None:
    for qid, (question, reference) in questions.items():
        status, body = worker.query(question, reference)
        assert status == 202, body
        assert body["question_id"] == qid
        assert body["status"] == "pending"
        assert body["message"]


def wait_completed(worker: Worker, ids: list[str], timeout: float = 180) -> dict[str, Any]:
    """Poll GET /status until every id is completed; returns the last bodies."""
    bodies: dict[str, Any] = {}

    def all_done() -> bool:
        for qid in ids:
            if bodies.get(qid, {}).get("status") == "completed":
                continue
            code, body = worker.status(qid)
            assert code in (200, 404, 503), body  # 404/503 only while the question is on its way
            if code == 200:
                assert body["status"] in ("pending", "processing", "retrying", "completed"), body
                bodies[qid] = body
        return all(bodies.get(qid, {}).get("status") == "completed" for qid in ids)

    wait_until(all_done, timeout, f"{len(ids)} questions to complete")
    return bodies


def check_results(bodies: dict[str, Any], questions: dict[str, tuple[str, str]]) -> None:
    for qid, body in bodies.items():
        question, reference = questions[qid]
        result = body["result"]
        assert result["question_id"] == qid
        assert result["answer"] == question  # the echo backend's answer
        if reference == question:
            assert result["score"] >= THRESHOLD
            assert result["processing_attempts"] == 1
            assert result["low_quality"] is False
        else:
            assert result["score"] < THRESHOLD
            assert result["processing_attempts"] == 3
            assert result["low_quality"] is True


def database_rows(url: str, ids: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    """(question_id -> status, question_id -> number of response rows)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            statuses = dict(connection.execute(
                text(f"SELECT question_id, status FROM questions WHERE question_id IN ({_params(ids)})"),
                _binds(ids)).all())
            counts = dict(connection.execute(
                text(f"SELECT question_id, COUNT(*) FROM responses WHERE question_id IN ({_params(ids)}) "
                     "GROUP BY question_id"), _binds(ids)).all())
            total = connection.execute(text("SELECT COUNT(*) FROM responses")).scalar_one()
    finally:
        engine.dispose()
    counts["__total__"] = total
    return statuses, counts


def _params(ids: list[str]) -> str:
    return ", ".join(f":id{i}" for i in range(len(ids)))


def _binds(ids: list[str]) -> dict[str, str]:
    return {f"id{i}": qid for i, qid in enumerate(ids)}


def run_pipeline_checks(worker: Worker, database_url: str, expect_cache_backend: str) -> list[str]:
    token = uuid.uuid4().hex[:10]
    questions = make_questions(token, good=15, low=5)
    ids = list(questions)
    submit_all(worker, questions)
    bodies = wait_completed(worker, ids)
    check_results(bodies, questions)

    statuses, counts = database_rows(database_url, ids)
    assert statuses == {qid: "completed" for qid in ids}
    assert {qid: counts.get(qid) for qid in ids} == {qid: 1 for qid in ids}

    # A repeat is answered from the cache, with the stored result.
    good_id = ids[0]
    code, body = worker.query(*questions[good_id])
    assert code == 200, body
    assert body["status"] == "found" and body["source"] == "cache"
    assert body["result"]["question_id"] == good_id
    assert body["result"]["answer"] == questions[good_id][0]

    # Same question with other spacing: same id, same cached answer.
    code, body = worker.query("  " + questions[good_id][0].replace(" ", "   ") + "\n")
    assert code == 200 and body["result"]["question_id"] == good_id

    code, body = worker.status("0123456789abcdef")
    assert code == 404 and "unknown" in body["error"]

    code, metrics = worker.request("GET", "/metrics")
    assert code == 200
    assert metrics["total_responses"] == counts["__total__"]
    assert metrics["attempts_distribution"] == {"1": 15, "3": 5}
    assert metrics["questions_by_status"] == {"completed": 20}
    assert metrics["low_quality_responses"] == 5
    assert sum(metrics["score_distribution"].values()) == 20
    assert metrics["cache_info"]["backend"] == expect_cache_backend
    assert metrics["cache_info"]["hits"] >= 2
    assert metrics["processing_time_ms"]["p50"] > 0
    return ids


def test_pipeline_on_postgresql_and_redis(stack_env, postgres_url, redis_url, start_worker_process):
    worker = start_worker_process(stack_env, database_url=postgres_url, redis_url=redis_url)
    ids = run_pipeline_checks(worker, postgres_url, "redis")
    client = redis.Redis.from_url(redis_url)
    try:
        for qid in ids:
            assert client.exists(f"response:{qid}") == 1
            assert 0 < client.ttl(f"response:{qid}") <= Settings().cache_ttl_seconds
    finally:
        client.close()
    code, metrics = worker.request("GET", "/metrics")
    assert metrics["cache_info"]["redis_keyspace_hits"] >= 2


def test_pipeline_on_sqlite_with_faust_cli(stack_env, start_worker_process, tmp_path):
    database_url = f"sqlite:///{tmp_path}/qastream.db"
    worker = start_worker_process(stack_env, faust_cli=True, database_url=database_url)
    run_pipeline_checks(worker, database_url, "memory")


def test_question_without_reference_is_stored_unscored(stack_env, start_worker_process, tmp_path):
    worker = start_worker_process(stack_env)
    question = f"What does tool {uuid.uuid4().hex[:8]} do?"
    code, body = worker.query(question)
    assert code == 202
    bodies = wait_completed(worker, [body["question_id"]], timeout=60)
    result = bodies[body["question_id"]]["result"]
    assert result["score"] is None
    assert result["low_quality"] is False
    assert result["processing_attempts"] == 1


def test_question_in_flight_is_not_enqueued_twice(stack_env, start_worker_process):
    worker = start_worker_process(stack_env)
    question = f"Why is queue {uuid.uuid4().hex[:8]} ordered?"
    first = worker.query(question, question)
    second = worker.query(question, question)
    assert first[0] == 202 and first[1]["status"] == "pending"
    assert second[0] == 202
    assert second[1]["question_id"] == first[1]["question_id"]
    assert "already" in second[1]["message"]
    bodies = wait_completed(worker, [first[1]["question_id"]], timeout=60)
    assert bodies[first[1]["question_id"]]["result"]["processing_attempts"] == 1
    code, metrics = worker.request("GET", "/metrics")
    assert metrics["queries"] == {"accepted": 1, "in_flight": 1}
    assert metrics["llm"]["calls"] == 1


BAD_REQUESTS = [
    pytest.param(b"{not json", "application/json", 400, "valid JSON", id="invalid-json"),
    pytest.param(b"[1, 2]", "application/json", 400, "JSON object", id="not-an-object"),
    pytest.param(b"{}", "application/json", 400, "question_text is required", id="missing-field"),
    pytest.param(b'{"question_text": 42}', "application/json", 400, "must be a string", id="wrong-type"),
    pytest.param(b'{"question_text": "   "}', "application/json", 400, "empty", id="blank"),
    pytest.param(b'{"question_text": "q", "original_answer": 7}', "application/json", 400, "original_answer",
                 id="bad-reference"),
    pytest.param(b"\xff\xfe", "application/json", 400, "UTF-8", id="not-utf8"),
    pytest.param(b'{"question_text": "' + b"x" * 70_000 + b'"}', "application/json", 413, "limit", id="too-large"),
    pytest.param(b'{"question_text": "q"}', "text/plain", 415, "application/json", id="not-json-type"),
]


@pytest.fixture(scope="module")
def web_worker(broker, echo_llm, artifacts, tmp_path_factory) -> Iterator[Worker]:
    """One worker for all the bad-input cases: each case also checks it still serves."""
    env = isolated_env(broker, echo_llm, tmp_path_factory.mktemp("web") / "var")
    worker = launch_worker(artifacts, "bad-input", env)
    yield worker
    worker.stop()


@pytest.mark.parametrize("raw, content_type, code, fragment", BAD_REQUESTS)
def test_bad_input_gets_a_4xx_with_a_message(web_worker, raw, content_type, code, fragment):
    status, body = web_worker.request("POST", "/query", raw=raw, content_type=content_type)
    assert status == code, body
    assert fragment in body["error"]
    # The worker keeps serving.
    status, body = web_worker.query(f"Is worker alive {uuid.uuid4().hex[:6]}?")
    assert status == 202, body


def test_wrong_method_is_405_not_500(web_worker):
    status, _ = web_worker.request("GET", "/query")
    assert status == 405
