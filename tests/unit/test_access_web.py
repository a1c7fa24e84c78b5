"""Access control in the worker's real aiohttp application, with the database on SQLite and no broker.

Every route of the router is classified (a new one fails here until it is),
refused without a key, refused with a key that lacks its scope, and passed
with one that holds it; the views that narrow what a key sees get its id.
"""

from __future__ import annotations

import dataclasses
import logging
from unittest.mock import AsyncMock

import pytest

import qastream.tables.parking  # noqa: F401  (the tables, as a worker discovers them)
import qastream.tables.status  # noqa: F401
from qastream.app import app, storage
from qastream.db import keys
from qastream.policy.access import Limits, Scope, parse_scopes, required_scope
from qastream.policy.keycache import KeyCache
from qastream.policy.keys import hash_key, new_key
from qastream.services.limiter import Limiter
from qastream.web import access, batches, cancel, dashboard, health, live, metrics, openapi, prometheus, query, status  # noqa: F401,E501

pytestmark = pytest.mark.asyncio(loop_scope="session")

#: Every route a worker serves and the scope it needs (None: open).  Faust's views need admin.
EXPECTED = {
    "/query": Scope.SUBMIT, "/status/{question_id}": Scope.READ, "/status/{question_id}/events": Scope.READ,
    "/answers/latest": Scope.READ,
    "/metrics": Scope.METRICS, "/metrics/prometheus": Scope.METRICS,
    "/health": None, "/": None, "/dashboard": None, "/static/{name}": None, "/openapi.json": None,
    "/table/": Scope.ADMIN, "/table/{name}/": Scope.ADMIN, "/table/{name}/{key}/": Scope.ADMIN,
    "/router/": Scope.ADMIN, "/router/topics": Scope.ADMIN, "/router/{name}/": Scope.ADMIN,
    "/router/{name}/{key}/": Scope.ADMIN,
    "/batches": Scope.READ, "/batches/{batch_id}": Scope.READ, "/batches/{batch_id}/results": Scope.READ,
    "/query/{question_id}": Scope.SUBMIT,
}
#: Methods whose scope differs from their route's (what changes something needs submit).
EXPECTED_METHODS = {("/batches", "POST"): Scope.SUBMIT, ("/batches/{batch_id}", "DELETE"): Scope.SUBMIT}
BATCH = "batch_0123456789abcdef01234567"
#: A concrete request for each route.
SAMPLE = {"/status/{question_id}": "/status/0123456789abcdef",
          "/status/{question_id}/events": "/status/0123456789abcdef/events", "/static/{name}": "/static/dashboard.js",
          "/table/{name}/": "/table/nope/", "/table/{name}/{key}/": "/table/nope/k/",
          "/router/{name}/": "/router/nope/", "/router/{name}/{key}/": "/router/nope/k/",
          "/batches/{batch_id}": f"/batches/{BATCH}", "/batches/{batch_id}/results": f"/batches/{BATCH}/results",
          "/query/{question_id}": "/query/0123456789abcdef"}
QID = "0123456789abcdef"



def router_paths() -> set[str]:
    return {route.resource.canonical for route in app.web.web_app.router.routes() if route.resource is not None}


@pytest.fixture
def auth(engine, monkeypatch):
    """QASTREAM_AUTH=required; keys in a SQLite database; returns ``make(name, scopes, revoked=False) -> key``."""
    monkeypatch.setattr(access, "settings", dataclasses.replace(access.settings, auth="required"))
    app.runtime.keys = KeyCache(0.5)

    def on_db(fn, *args):
        with engine.begin() as connection:
            return fn(connection, *args)

    monkeypatch.setattr(storage, "key", AsyncMock(side_effect=lambda h: on_db(keys.lookup, h)))
    monkeypatch.setattr(storage, "touch_key", AsyncMock(side_effect=lambda i, now: on_db(keys.touch, i, now)))

    def make(name, scopes, revoked=False, limits=None):
        key = new_key()
        on_db(keys.create, name, hash_key(key), parse_scopes(scopes), limits or Limits(), 1e9)
        if revoked:
            on_db(keys.revoke, name, 1e9)
        return key

    make.on_db = on_db
    return make


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def request_of(route):
    method = {"/query": "post", "/query/{question_id}": "delete"}.get(route, "get")
    return method, SAMPLE.get(route, route)


async def test_every_route_in_the_router_is_classified(web_app):
    assert router_paths() == set(EXPECTED), "a route was added or removed: classify it in EXPECTED"
    for route, scope in EXPECTED.items():
        assert required_scope(route) == scope, route
    for (route, method), scope in EXPECTED_METHODS.items():
        assert required_scope(route, method) == scope, (route, method)


@pytest.mark.parametrize("method, route", [("post", "/batches"), ("delete", f"/batches/{BATCH}")])
async def test_changing_a_batch_needs_submit_where_reading_it_needs_read(client, auth, method, route):
    response = await client.request(method, route, headers=bearer(auth("reader", "read")))
    assert response.status == 403 and "lacks the submit scope" in (await response.json())["error"]


@pytest.mark.parametrize("route", sorted(EXPECTED))
async def test_without_a_key_only_open_routes_answer(client, auth, route):
    method, path = request_of(route)
    response = await client.request(method, path, allow_redirects=False)
    if EXPECTED[route] is None:
        assert response.status != 401
    else:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "API key is required" in (await response.json())["error"]


@pytest.mark.parametrize("route", sorted(r for r, s in EXPECTED.items() if s is not None))
async def test_a_key_without_the_scope_is_403_and_admin_passes(client, auth, route):
    held = {Scope.SUBMIT: "read,metrics", Scope.READ: "submit,metrics", Scope.METRICS: "submit,read",
            Scope.ADMIN: "submit,read,metrics"}[EXPECTED[route]]
    method, path = request_of(route)
    response = await client.request(method, path, headers=bearer(auth("lacking", held)))
    assert response.status == 403
    assert "'lacking' lacks the" in (await response.json())["error"]
    response = await client.request(method, path, headers=bearer(auth("root", "admin")))
    assert response.status not in (401, 403)


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic abc", "Bearer qsk_x y", "Bearer clé",
                                    "Bearer " + "a" * 5_000, "Bearer qsk_" + "A" * 43])
async def test_malformed_and_unknown_keys_are_401(client, auth, header):
    auth("someone", "admin")
    response = await client.get("/metrics", headers={"Authorization": header})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await response.json())["error"]


async def test_a_token_of_no_keys_shape_costs_no_lookup(client, auth):
    response = await client.get("/metrics", headers={"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"})
    assert response.status == 401 and (await response.json())["error"] == "unknown API key"
    assert storage.key.await_count == 0


async def test_a_non_ascii_header_is_401_not_a_crash(client, auth):
    response = await client.get("/metrics", headers={"Authorization": "Bearer \u00e9".encode().decode("latin-1")})
    assert response.status == 401


async def test_a_revoked_key_is_401_and_the_log_names_it_never_the_key(client, auth, caplog):
    key = auth("gone", "admin", revoked=True)
    with caplog.at_level(logging.INFO, logger="qastream.web.access"):
        response = await client.get("/metrics", headers=bearer(key))
    assert response.status == 401 and "revoked" in (await response.json())["error"]
    assert "'gone'" in caplog.text and key not in caplog.text and key[4:20] not in caplog.text


async def test_revocation_is_seen_once_the_cached_lookup_expires(client, auth, monkeypatch):
    monkeypatch.setattr(metrics, "snapshot", AsyncMock(return_value={"ok": 1}))
    key = auth("soon", "metrics")
    assert (await client.get("/metrics", headers=bearer(key))).status == 200
    auth.on_db(keys.revoke, "soon", 2e9)
    app.runtime.keys.entries.clear()  # what 0.5 s does (the cache's expiry is tested in test_keycache)
    assert (await client.get("/metrics", headers=bearer(key))).status == 401


async def test_the_scope_holder_gets_the_view_and_its_use_is_recorded_once(client, auth, monkeypatch):
    monkeypatch.setattr(metrics, "snapshot", AsyncMock(return_value={"ok": 1}))
    key = auth("grafana", "metrics")
    for _ in range(3):
        response = await client.get("/metrics", headers=bearer(key))
        assert response.status == 200 and await response.json() == {"ok": 1}
    assert storage.touch_key.await_count == 1
    assert auth.on_db(keys.listing)[0].last_used_at is not None


@pytest.mark.parametrize("scopes, sees_all", [("read", False), ("admin", True)])
async def test_latest_answers_are_a_keys_own_unless_admin(client, auth, monkeypatch, scopes, sees_all):
    latest = AsyncMock(return_value=[])
    monkeypatch.setattr(storage, "latest_answers", latest)
    key = auth("reader", scopes)
    response = await client.get("/answers/latest?limit=5", headers=bearer(key))
    assert response.status == 200
    key_id = auth.on_db(keys.lookup, hash_key(key)).principal.key_id
    assert latest.await_args.args == (5, None if sees_all else key_id)


#: A rate so slow that no token comes back during a test: the burst is all a key gets.
NO_REFILL = Limits(rate=0.001, burst=2)


async def test_past_its_burst_a_key_is_429_with_retry_after_and_the_log_names_it(client, auth, monkeypatch, caplog):
    monkeypatch.setattr(access, "limiter", Limiter())
    monkeypatch.setattr(metrics, "snapshot", AsyncMock(return_value={"ok": 1}))
    key = auth("scraper", "metrics", limits=NO_REFILL)
    other = auth("grafana", "metrics", limits=NO_REFILL)
    assert [(await client.get("/metrics", headers=bearer(key))).status for _ in range(2)] == [200, 200]
    with caplog.at_level(logging.INFO, logger="qastream.web.access"):
        refused = await client.get("/metrics", headers=bearer(key))
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 900   # 1 token / 1000 s
    assert "scraper" in (await refused.json())["error"] and "'scraper' is over its rate" in caplog.text
    assert key not in caplog.text
    assert (await client.get("/metrics", headers=bearer(other))).status == 200     # buckets are per key


async def test_a_status_request_costs_its_key_one_token_not_one_per_layer(client, auth, monkeypatch):
    monkeypatch.setattr(access, "limiter", Limiter())
    monkeypatch.setattr(storage, "owns", AsyncMock(return_value=False))
    monkeypatch.setattr(status, "ensure_metadata", AsyncMock())
    monkeypatch.setattr(status, "forwarded", AsyncMock(return_value=None))  # this worker owns the question
    key = auth("poller", "read", limits=NO_REFILL)
    answers = [(await client.get(f"/status/{QID}", headers=bearer(key))).status for _ in range(3)]
    assert answers == [404, 404, 429]


async def test_a_live_status_stream_costs_its_key_one_token_and_hides_other_keys_questions(client, auth, monkeypatch):
    monkeypatch.setattr(access, "limiter", Limiter())
    monkeypatch.setattr(storage, "owns", AsyncMock(return_value=False))
    monkeypatch.setattr(live, "ensure_metadata", AsyncMock())
    monkeypatch.setattr(live, "owner_of", lambda table, key: None)  # this worker owns the question
    key = auth("watcher", "read", limits=NO_REFILL)
    answers = [(await client.get(f"/status/{QID}/events", headers=bearer(key))).status for _ in range(3)]
    assert answers == [404, 404, 429]


async def test_with_auth_off_nothing_is_asked(client, monkeypatch):
    monkeypatch.setattr(metrics, "snapshot", AsyncMock(return_value={"ok": 1}))
    looked_up = AsyncMock()
    monkeypatch.setattr(storage, "key", looked_up)
    response = await client.get("/metrics", headers={"Authorization": "Bearer nonsense"})
    assert response.status == 200 and looked_up.await_count == 0


async def test_a_database_that_fails_the_lookup_is_503_with_retry_after(client, auth, monkeypatch):
    monkeypatch.setattr(storage, "key", AsyncMock(side_effect=OSError("down")))
    response = await client.get("/metrics", headers=bearer(new_key()))
    assert response.status == 503 and int(response.headers["Retry-After"]) >= 1


async def test_the_openapi_document_marks_open_routes_and_scoped_ones(client):
    document = await (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for operation in item.values():
            if EXPECTED[path] is None:
                assert operation["security"] == []
            else:
                assert {"401", "403"} <= set(operation["responses"]), path
    assert "429" in document["paths"]["/query"]["post"]["responses"]
