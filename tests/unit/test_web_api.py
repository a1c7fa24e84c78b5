"""The worker's HTTP surface without a broker: routes, dashboard files, OpenAPI, /metrics fields, Prometheus.

The views run in the app's real aiohttp application (Faust's blueprints
applied, as a worker does at start); only what leaves the process (the
database, the consumer) is replaced.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from unittest.mock import AsyncMock

import pytest
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

import qastream.tables.parking  # noqa: F401  (the tables, as a worker discovers them)
import qastream.tables.status  # noqa: F401
from qastream.app import app, storage
from qastream.db import totals
from qastream.db.migrate import upgrade
from qastream.policy.lifecycle import Stage, State
from qastream.services.storage import make_engine
from qastream.web import batches, cancel, dashboard, health, live, metrics, openapi, prometheus, query, status  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
SEED_FIELDS = {"total_responses", "average_score", "attempts_distribution", "score_distribution",
               "questions_by_status", "processing_time_ms", "cache_info", "queries", "llm", "scorer",
               "circuit_breaker", "parked_retries", "poison_messages", "dead_letters", "dead_letters_by_class",
               "error_retries_of_completed", "worker"}
ISSUE_FIELDS = {"throughput", "errors_by_class", "retries", "consumer_lag", "worker_counts"}

# The session's event loop, as the shared ``client`` fixture (conftest.py): the app's aiohttp
# application binds to the first loop that serves it.
pytestmark = pytest.mark.asyncio(loop_scope="session")



@pytest.fixture
def database(tmp_path, monkeypatch):
    """storage answers from a SQLite file; the consumer has no assignment."""
    engine = make_engine(f"sqlite:///{tmp_path}/t.db")
    upgrade(engine)

    def on_db(fn, *args):
        with engine.connect() as connection:
            return fn(connection, *args)

    from qastream.db import recent
    monkeypatch.setattr(storage, "metrics", AsyncMock(side_effect=lambda: on_db(totals.read)))
    monkeypatch.setattr(storage, "throughput", AsyncMock(side_effect=lambda now: on_db(recent.throughput, now)))
    monkeypatch.setattr(storage, "latest_answers",
                        AsyncMock(side_effect=lambda limit, owner=None: on_db(recent.latest_answers, limit, owner)))
    monkeypatch.setattr(metrics, "parked", lambda table, topic: 0)
    lag = {"total": 3, "topics": {"t-questions-pending": {"lag": 3, "partitions": {
        "0": {"highwater": 10, "committed": 7, "lag": 3}}}}}
    app.runtime.consumer_lag, app.runtime.consumer_lag_at = lag, time.time() - 2  # as the lag timer left it
    yield engine
    engine.dispose()


def api_routes() -> set[tuple[str, str]]:
    """(method, path) of every route in the app's aiohttp router (HEAD is implied by GET)."""
    routes = set()
    for route in app.web.web_app.router.routes():
        if route.method != "HEAD":
            routes.add((route.method.lower(), route.resource.canonical))
    return routes


async def test_root_redirects_to_the_dashboard(client):
    response = await client.get("/", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/dashboard"


async def test_dashboard_and_its_files_are_served_by_the_app(client):
    page = await client.get("/dashboard")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert "/static/dashboard.js" in html and "/static/dashboard.css" in html
    assert "http://" not in html and "https://" not in html  # no CDN
    for name, content_type in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        response = await client.get(f"/static/{name}")
        assert (response.status, response.content_type) == (200, content_type)


@pytest.mark.parametrize("name", ["missing.js", "dashboard.py", "..%2Fdashboard.py", ".hidden.js", "dashboard"])
async def test_only_dashboard_files_are_static(client, name):
    response = await client.get(f"/static/{name}")
    assert response.status == 404
    assert "error" in await response.json()


async def test_openapi_document_is_valid_and_describes_every_route(client):
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    validate(document)
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    assert api_routes() - described == set()
    assert described - api_routes() == set()  # nothing described that does not exist
    codes = {code for item in document["paths"].values() for op in item.values() for code in op["responses"]}
    assert {"400", "404", "405", "413", "415", "503"} <= codes


@pytest.mark.parametrize("schema, field, enum", [
    ("Accepted", "status", State),
    ("Status", "status", State),
    ("Status", "stage", Stage),
])
async def test_openapi_enums_are_the_enum_members(client, schema, field, enum):
    document = await (await client.get("/openapi.json")).json()
    assert document["components"]["schemas"][schema]["properties"][field]["enum"] == [m.value for m in enum]


@pytest.mark.parametrize("limit", ["abc", "0", "-1", "201", "%FF", "%ED%A0%80", "1%00", "9" * 5000])
async def test_latest_answers_rejects_a_bad_limit(client, database, limit):
    response = await client.get(f"/answers/latest?limit={limit}")
    assert response.status == 400
    assert "limit" in (await response.json())["error"]


async def test_latest_answers(client, database):
    response = await client.get("/answers/latest")
    assert response.status == 200
    assert await response.json() == {"answers": []}


async def test_metrics_keeps_the_seed_fields_and_adds_the_new_ones(client, database):
    response = await client.get("/metrics")
    assert response.status == 200
    body = await response.json()
    assert SEED_FIELDS | ISSUE_FIELDS <= set(body)
    assert set(body["throughput"]) == {"accepted_per_minute", "completed_per_minute", "failed_per_minute"}
    assert set(body["llm"]["latency_ms"]) == {"p50", "p95", "p99", "max", "count", "window"}
    (server,) = body["llm"]["servers"]
    assert {"url", "calls", "in_flight", "waiting", "concurrency", "failures_by_class", "breaker"} <= set(server)
    assert body["circuit_breaker"]["servers"] == {server["url"]: "closed"}
    assert body["consumer_lag"]["total"] == 3
    assert 2 <= body["consumer_lag"]["age_seconds"] < 60


async def test_metrics_never_asks_the_broker_and_the_lag_timer_does(database, monkeypatch):
    asked = AsyncMock(return_value={"total": 7, "topics": {}})
    monkeypatch.setattr(metrics, "consumer_lag", asked)
    await metrics.snapshot()
    assert asked.await_count == 0
    await metrics.refresh_lag()
    assert (await metrics.snapshot())["consumer_lag"]["total"] == 7 and asked.await_count == 1


async def test_lag_before_the_first_refresh_is_empty_and_ageless():
    assert metrics.last_lag(None, 0.0, 100.0) == {"total": 0, "topics": {}, "age_seconds": None}
    assert metrics.last_lag({"total": 1, "topics": {}}, 90.0, 100.0) == {"total": 1, "topics": {}, "age_seconds": 10.0}


def documented_metrics_fields() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- metrics:start", 1)[1].split("<!-- metrics:end -->", 1)[0]
    return set(re.findall(r"^\| `([a-z_0-9]+)` \|", section, flags=re.MULTILINE))


async def test_every_metrics_field_is_documented_in_the_readme_and_the_openapi_schema(database):
    body = await metrics.snapshot()
    assert set(body) - documented_metrics_fields() == set()
    assert set(body) - set(openapi.SCHEMAS["Metrics"]["properties"]) == set()


async def test_prometheus_exposition_parses(client, database):
    response = await client.get("/metrics/prometheus")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    assert all(name.startswith("qastream_") for name in families)
    assert families["qastream_llm_call_duration_seconds"].type == "histogram"
    assert families["qastream_question_duration_seconds"].type == "histogram"
    assert families["qastream_answer_score"].type == "histogram"
    assert families["qastream_queries"].type == "counter"
    lag = [s for s in families["qastream_consumer_lag"].samples]
    assert [(s.labels, s.value) for s in lag] == [({"topic": "t-questions-pending", "partition": "0"}, 3.0)]
    states = {s.labels["state"]: s.value for s in families["qastream_circuit_breaker_state"].samples}
    assert states == {"closed": 1.0, "half_open": 0.0, "open": 0.0}
    # Each LLM server's calls, in-flight calls, breaker state and transitions, labelled by its URL.
    (server,) = {s.labels["server"] for s in families["qastream_llm_server_calls"].samples}
    assert server == app.runtime.llm_servers[0].url
    assert families["qastream_llm_server_in_flight"].type == "gauge"
    assert {(s.labels["state"], s.value) for s in families["qastream_llm_server_breaker_state"].samples} == {
        ("closed", 1.0), ("half_open", 0.0), ("open", 0.0)}
    assert families["qastream_llm_server_breaker_transitions"].type == "counter"


# -- findings of the fuzzer (tests/integration/test_fuzz_api.py), kept ----------------------

@pytest.mark.parametrize("path", ["/table/0/0/", "/router/0/", "/router/0/0/", "/router/%ED%A0%80/x/"])
async def test_faust_views_answer_404_for_a_table_that_does_not_exist(client, path):
    """Faust answered these 503 ("try again later") or 500."""
    response = await client.get(path)
    assert response.status == 404
    assert (await response.json())["error"] == "unknown table"


@pytest.mark.parametrize("body, fragment", [
    (b'{"question_text": "a\\ud800"}', "lone surrogate"),
    (b'{"question_text": "q", "original_answer": "a\\udc00"}', "lone surrogate"),
    (b'{"question_text": "a\\u0000b"}', "NUL"),
    (b"[" * 5000, "nested too deeply"),
    (b'{"question_text": ' + b"[" * 5000 + b"}", "nested too deeply"),
])
async def test_query_rejects_unstorable_input_with_400(client, body, fragment):
    response = await client.post("/query", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert fragment in (await response.json())["error"]


@pytest.mark.parametrize("question_id", ["%ED%A0%80", "%FF%FE", "%00", "x" * 300, "0123456789ABCDEF"])
async def test_status_of_something_that_is_no_question_id_is_404(client, question_id):
    response = await client.get(f"/status/{question_id}")
    assert response.status == 404
    assert "not a question id" in (await response.json())["error"]
