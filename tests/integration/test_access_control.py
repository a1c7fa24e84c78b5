"""Access control on real workers (issue 14): two workers on Tansu, PostgreSQL and Redis, keys made with the CLI.

Both workers start once for the module (each test uses its own keys and
questions).  Two, because ``GET /status`` is forwarded to the worker owning
the question's partition: the key and the ownership check must hold
whichever worker answers.  Questions meant to stay in flight carry a
``[[fail:429]]`` marker: the LLM server refuses them with 429 every time and
the quota retry waits 600 s, so they stay open for the whole module without
depending on how fast anything runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from sqlalchemy import create_engine, text
from stackutil import (
    POSTGRES_URL,
    REDIS_URL,
    Broker,
    LLMServer,
    Worker,
    isolated_env,
    launch_worker,
    require_service,
    wait_until,
)

from qastream.policy.keys import hash_key

pytestmark = pytest.mark.integration
NEVER_ASKED = "0123456789abcdef"


def call(worker: Worker, method: str, path: str, key: Optional[str] = None, body: Any = None,
         header: Optional[str] = None) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON body, headers); ``key`` sent as a bearer token, or ``header`` as the raw Authorization."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if header is not None:
        headers["Authorization"] = header
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(worker.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        status, payload, got = err.code, err.read(), dict(err.headers)
    try:
        return status, json.loads(payload or b"null"), got
    except ValueError:  # the dashboard page, a script
        return status, payload.decode(errors="replace"), got


def ask(worker: Worker, key: Optional[str], question: str) -> tuple[int, Any, dict[str, str]]:
    return call(worker, "POST", "/query", key, {"question_text": question})


def keys_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qastream", "keys", *args], env=env, capture_output=True,
                          text=True, timeout=60)


class Stack:
    """The module's two workers, their database and a key factory."""

    def __init__(self, workers: list[Worker], env: dict[str, str], database_url: str, logs: list[Path]) -> None:
        self.workers = workers
        self.env = env
        self.database_url = database_url
        self.log_files = logs
        self.keys: dict[str, str] = {}

    def key(self, scopes: str, *options: str) -> str:
        name = f"k{len(self.keys)}-{scopes.replace(',', '-')}"
        created = keys_command(self.env, "create", name, "--scope", scopes, *options)
        assert created.returncode == 0, created.stderr
        self.keys[name] = created.stdout.strip()
        return self.keys[name]

    def name_of(self, key: str) -> str:
        return next(name for name, k in self.keys.items() if k == key)

    def dump(self) -> str:
        """Every row of every table of the schema, as text."""
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                tables = connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = "
                                                 "current_schema()")).scalars().all()
                return "\n".join(str(row) for table in tables
                                 for row in connection.execute(text(f'SELECT * FROM "{table}"')))
        finally:
            engine.dispose()

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.log_files)


@pytest.fixture(scope="module")
def stack(broker: Broker, echo_llm: LLMServer, artifacts: Path, tmp_path_factory) -> Iterator[Stack]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)  # the rate limits both workers share
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    env = {**isolated_env(broker, echo_llm, tmp_path_factory.mktemp("access") / "var"),
           "QASTREAM_DATABASE_URL": url, "QASTREAM_REDIS_URL": REDIS_URL, "QASTREAM_AUTH": "required",
           "QASTREAM_RETRY_QUOTA_DELAY_SECONDS": "600"}
    workers: list[Worker] = []
    try:
        with ThreadPoolExecutor(2) as pool:  # both start at once; each is kept (and stopped) even if one fails
            futures = [pool.submit(launch_worker, artifacts, f"access-{i}", env) for i in range(2)]
            for future in futures:
                if future.exception() is None:
                    workers.append(future.result())
            for future in futures:
                future.result()
        # Started together, each was ready alone; wait for the rebalance that put both in the group.
        wait_until(lambda: all(call(w, "GET", "/health")[0] == 200 for w in workers), 120, "both workers ready")
        logs = [artifacts / f"access-{i}-worker-{worker.port}.log" for i, worker in enumerate(workers)]
        yield Stack(workers, env, url, logs)
    finally:
        for worker in workers:
            worker.stop()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def wait_answered(worker: Worker, key: str, question_id: str) -> None:
    wait_until(lambda: call(worker, "GET", f"/status/{question_id}", key)[1].get("status") == "completed",
               60, f"question {question_id} answered")


def test_no_key_or_a_wrong_key_is_401_and_open_routes_stay_open(stack):
    worker = stack.workers[0]
    for header in (None, "", "Bearer", "Bearer qsk_" + "x" * 43, "Basic dXNlcjpwYXNz", "Bearer " + "é" * 10):
        code, body, headers = call(worker, "POST", "/query", body={"question_text": "What is 401?"},
                                   header=header)
        assert code == 401, (header, body)
        assert headers["WWW-Authenticate"].startswith("Bearer") and body["error"]
    for path in ("/status/" + NEVER_ASKED, "/metrics", "/table/", "/router/", "/answers/latest"):
        assert call(worker, "GET", path)[0] == 401, path
    for path in ("/health", "/openapi.json", "/dashboard", "/static/dashboard.js"):
        assert call(worker, "GET", path)[0] in (200, 503 if path == "/health" else 200), path


def test_a_key_without_the_scope_is_403(stack):
    worker = stack.workers[1]
    metrics_only, reader, root = stack.key("metrics"), stack.key("submit,read"), stack.key("admin")
    assert ask(worker, metrics_only, "What is 403?")[0] == 403
    for path in ("/metrics", "/metrics/prometheus", "/table/", "/router/", "/table/status/x/"):
        code, body, _ = call(worker, "GET", path, reader)
        assert code == 403 and stack.name_of(reader) in body["error"], path
    assert call(worker, "GET", "/metrics", metrics_only)[0] == 200
    assert call(worker, "GET", "/table/", root)[0] == 200
    assert call(worker, "GET", "/router/", root)[0] == 200


def test_another_keys_question_is_404_like_an_unknown_one_on_every_worker(stack):
    owner, stranger, root = stack.key("submit,read"), stack.key("submit,read"), stack.key("admin")
    code, body, _ = ask(stack.workers[0], owner, f"What is ownership {uuid.uuid4().hex[:8]}?")
    assert code == 202, body
    qid = body["question_id"]
    wait_answered(stack.workers[0], owner, qid)
    for worker in stack.workers:  # one of them forwards to the other, with the key
        assert call(worker, "GET", f"/status/{qid}", owner)[0] == 200
        assert call(worker, "GET", f"/status/{qid}", root)[0] == 200
        hidden = call(worker, "GET", f"/status/{qid}", stranger)
        unknown = call(worker, "GET", f"/status/{NEVER_ASKED}", stranger)
        assert (hidden[0], unknown[0]) == (404, 404)
        assert hidden[1] == {"error": unknown[1]["error"].replace(NEVER_ASKED, qid)}
    own = call(stack.workers[1], "GET", "/answers/latest", owner)[1]["answers"]
    assert [a["question_id"] for a in own] == [qid]
    assert call(stack.workers[1], "GET", "/answers/latest", stranger)[1]["answers"] == []
    # Asked by the stranger too, the question belongs to both.
    assert ask(stack.workers[1], stranger, own[0]["question_text"])[0] == 200
    assert call(stack.workers[1], "GET", f"/status/{qid}", stranger)[0] == 200


def test_past_max_in_flight_is_429_with_retry_after_on_every_worker(stack):
    bounded = stack.key("submit,read", "--max-in-flight", "2")
    tag = uuid.uuid4().hex[:8]
    code, body, _ = ask(stack.workers[0], bounded, f"What is answered {tag}?")
    assert code == 202
    wait_answered(stack.workers[0], bounded, body["question_id"])
    parked = [ask(stack.workers[i], bounded, f"What is parked {i} {tag}? [[fail:429]]") for i in range(2)]
    assert [p[0] for p in parked] == [202, 202], parked
    for worker in stack.workers:
        code, body, headers = ask(worker, bounded, f"What is one too many {tag}?")
        assert code == 429, body
        assert headers["Retry-After"].isdigit() and 1 <= int(headers["Retry-After"]) <= 10
        assert stack.name_of(bounded) in body["error"]
    # What does not add to the count is still served: an answered question, one already in flight.
    assert ask(stack.workers[1], bounded, f"What is answered {tag}?")[0] == 200
    assert ask(stack.workers[1], bounded, f"What is parked 0 {tag}? [[fail:429]]")[0] == 202
    # Another key is not bound by this one's questions.
    assert ask(stack.workers[1], stack.key("submit"), f"What is one too many {tag}?")[0] == 202


def test_the_bound_holds_when_both_workers_accept_for_one_key_at_once(stack):
    """Twelve questions at once, alternating workers: the database's count (keys locked in the acceptance
    transaction) lets exactly three in, whichever worker got them."""
    bounded = stack.key("submit", "--max-in-flight", "3")
    tag = uuid.uuid4().hex[:8]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: ask(stack.workers[i % 2], bounded, f"What is rush {i} {tag}? [[fail:429]]"),
                                range(12)))
    codes = sorted(code for code, _, _ in answers)
    assert codes == [202] * 3 + [429] * 9, answers


def test_two_workers_together_keep_a_keys_rate_within_its_burst(stack):
    """A key of 5 requests/s, bursts of 5, hammered on both workers at once for ~3 s: the bucket lives in
    Redis, so together they let at most rate x elapsed + burst through (each alone would allow that much)."""
    rate, burst = 5.0, 5
    hammered = stack.key("metrics", "--rate", str(rate), "--burst", str(burst))
    started = time.monotonic()
    deadline = started + 3.0

    def hammer(worker: Worker) -> list[tuple[int, dict[str, str]]]:
        answers = []
        while time.monotonic() < deadline:
            code, _, headers = call(worker, "GET", "/metrics", hammered)
            answers.append((code, headers))
        return answers

    with ThreadPoolExecutor(4) as pool:
        per_worker = list(pool.map(hammer, [stack.workers[i % 2] for i in range(4)]))
    elapsed = time.monotonic() - started
    answers = [a for thread in per_worker for a in thread]
    allowed = sum(code == 200 for code, _ in answers)
    refused = [headers for code, headers in answers if code == 429]
    assert {code for code, _ in answers} <= {200, 429}
    assert burst <= allowed <= rate * elapsed + burst + 1, (allowed, elapsed)
    assert refused and all(1 <= int(h["Retry-After"]) <= 2 for h in refused)
    for i in (0, 1):  # both workers served and refused: the limit is shared, not one worker's
        codes = {code for thread in per_worker[i::2] for code, _ in thread}
        assert codes == {200, 429}, (i, codes)


def test_a_status_read_past_the_rate_is_429_with_retry_after_whichever_worker_owns_it(stack):
    """One token (no refill within the test): the first read is served; every later one, forwarded to the
    owning worker or not, is refused there with its Retry-After passed back to the client."""
    slow = stack.key("read", "--rate", "0.001", "--burst", "1")
    answers = [call(stack.workers[i % 2], "GET", f"/status/{NEVER_ASKED}", slow) for i in range(4)]
    assert [code for code, _, _ in answers] == [404, 429, 429, 429], answers
    for _, body, headers in answers[1:]:
        assert int(headers["Retry-After"]) >= 900 and stack.name_of(slow) in body["error"]


def test_a_live_status_stream_checks_the_key_where_it_is_served_and_costs_one_token(stack):
    """GET /status/{id}/events is relayed with the client's key to the worker owning the question, which
    checks it (another key's question is the 404 of an unknown one) and charges it once."""
    owner, stranger = stack.key("submit,read"), stack.key("submit,read")
    code, body, _ = ask(stack.workers[0], owner, f"What is streamed {uuid.uuid4().hex[:8]}?")
    assert code == 202, body
    qid = body["question_id"]
    wait_answered(stack.workers[0], owner, qid)
    for worker in stack.workers:  # one of them relays to the other, with the key
        code, stream, headers = call(worker, "GET", f"/status/{qid}/events", owner)
        assert code == 200 and headers["Content-Type"].startswith("text/event-stream")
        assert stream.startswith("event: completed\n") and stream.count("event:") == 1, stream
        hidden = call(worker, "GET", f"/status/{qid}/events", stranger)
        unknown = call(worker, "GET", f"/status/{NEVER_ASKED}/events", stranger)
        assert (hidden[0], unknown[0]) == (404, 404)
        assert hidden[1] == {"error": unknown[1]["error"].replace(NEVER_ASKED, qid)}
        assert call(worker, "GET", f"/status/{qid}/events")[0] == 401
    slow = stack.key("read", "--rate", "0.001", "--burst", "1")
    answers = [call(stack.workers[i % 2], "GET", f"/status/{NEVER_ASKED}/events", slow) for i in range(4)]
    assert [code for code, _, _ in answers] == [404, 429, 429, 429], answers
    assert all(int(headers["Retry-After"]) >= 900 for _, _, headers in answers[1:])


def test_a_revoked_key_is_refused_by_every_worker_within_a_second(stack):
    doomed = stack.key("read")
    for worker in stack.workers:  # each worker now remembers the key as valid
        assert call(worker, "GET", "/answers/latest", doomed)[0] == 200
    revoked = keys_command(stack.env, "revoke", stack.name_of(doomed))
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(0.6)  # past QASTREAM_AUTH_CACHE_SECONDS (0.5): what each worker remembered has expired
    for worker in stack.workers:
        code, body, _ = call(worker, "GET", "/answers/latest", doomed)
        assert code == 401 and "revoked" in body["error"]


def test_keys_list_and_the_database_and_the_logs_never_hold_a_key(stack):
    reader = stack.key("read")
    assert call(stack.workers[0], "GET", "/metrics", reader)[0] == 403  # a refusal to find in the log
    listed = keys_command(stack.env, "list")
    assert listed.returncode == 0 and stack.name_of(reader) in listed.stdout
    dump, logs = stack.dump(), stack.logs()
    assert stack.keys and dump and logs
    for name, key in stack.keys.items():
        for text_ in (dump, logs, listed.stdout, listed.stderr):
            assert key not in text_ and key[4:24] not in text_, name
        assert hash_key(key) in dump and hash_key(key) not in listed.stdout
    assert f"key {stack.name_of(reader)!r} lacks the metrics scope" in logs


def test_a_worker_on_a_public_address_without_auth_refuses_to_start(stack):
    env = {**stack.env, "QASTREAM_AUTH": "off", "QASTREAM_WEB_HOST": "0.0.0.0", "QASTREAM_WEB_PORT": "1"}
    started = subprocess.run([sys.executable, "-m", "qastream", "worker", "-l", "info"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert "QASTREAM_AUTH=off" in started.stderr and "QASTREAM_AUTH_ALLOW_ANONYMOUS" in started.stderr
    assert "Traceback" not in started.stderr
