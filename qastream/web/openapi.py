"""``GET /openapi.json``: an OpenAPI 3.1 description of every HTTP route of a worker.

Written by hand rather than generated: Faust views carry no schemas.  A test
validates the document and checks that every route in the worker's aiohttp
router, including Faust's own ``/table`` and ``/router`` views, is described.
"""

from __future__ import annotations

from typing import Any

from faust import web

import qastream
from qastream.app import app
from qastream.db.recent import MAX_LATEST
from qastream.policy.access import Scope, required_scope
from qastream.policy.lifecycle import STAGE_STATE, TERMINAL, Stage
from qastream.policy.live import event_name
from qastream.web.openapi_schemas import (
    OBJECT,
    SCHEMAS,
    UNAVAILABLE,
    WRONG_METHOD,
    error,
    get,
    json_body,
    path_param,
    ref,
    text_body,
)

#: The events of a live status stream, in the order of a question's life (the terminal ones last).
LIVE_EVENTS = [event_name(stage) for stage in Stage if STAGE_STATE[stage] not in TERMINAL] + [
    event_name(stage) for stage in Stage if STAGE_STATE[stage] in TERMINAL]

FAUST = ("faust",)
TABLE_NAME = path_param("name", "table name: status, attempts, overload-parking, quota-parking, webhook-parking")
TABLE_KEY = path_param("key", "table key (a question id)")


def paths() -> dict[str, Any]:
    qid = path_param("question_id", "question id from POST /query")
    return {
        "/query": {"post": {
            "summary": "Submit a question: answered from cache or database, or accepted and enqueued",
            "tags": ["qastream"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref("QueryRequest")}}},
            "responses": {
                "200": json_body("already answered (cache or database)", ref("Found")),
                "202": json_body("accepted, or already being processed", ref("Accepted")),
                "400": error("the body is not UTF-8 JSON, is nested too deeply or is not an object; a field is "
                             "missing, of the wrong type, empty or too long; a text holds what the database "
                             "cannot store (NUL, a lone surrogate); the webhook_url is refused (not http(s), a "
                             "private or local host, webhooks not enabled)"),
                "405": WRONG_METHOD,
                "408": error("the body did not arrive within QASTREAM_BODY_TIMEOUT_SECONDS"),
                "413": error("the body is larger than QASTREAM_MAX_BODY_BYTES"),
                "415": error("Content-Type is not application/json"),
                "503": UNAVAILABLE,
            },
        }},
        "/status/{question_id}": get("Where a question is, from the worker owning its partition", {
            "200": json_body("the question's status, with the result once completed", ref("Status")),
            "404": error("unknown question id, not a question id at all, or a question the key did not ask"),
            "503": UNAVAILABLE},
            parameters=(qid,)),
        "/status/{question_id}/events": get("A question's status changes, live, as Server-Sent Events", {
            "200": {"description": (
                "A `text/event-stream`: first the question's current state, then one event per status change "
                f"until the terminal one ({', '.join(f'`{name}`' for name in LIVE_EVENTS)}), after which the "
                "stream closes. Each event has an `id:` (the status version, `epoch.attempt.retries.rank`; send "
                "it back as `Last-Event-ID` when reconnecting to get only what followed) and a `data:` line "
                "holding the JSON body GET /status answers at that moment (schema `Status`). A `: ping` comment "
                "every QASTREAM_LIVE_PING_SECONDS keeps an idle connection open; the stream closes after "
                "QASTREAM_LIVE_MAX_SECONDS (reconnect). Served by the worker owning the question, relayed by any "
                "other."),
                "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            "204": {"description": "Last-Event-ID names the question's terminal event: nothing more will come"},
            "404": error("unknown question id, not a question id at all, or a question the key did not ask"),
            "503": {**error("as for GET /status, or the worker has QASTREAM_LIVE_MAX_STREAMS streams open: retry "
                            "after the Retry-After header"),
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}}}},
            parameters=(qid, {"name": "Last-Event-ID", "in": "header", "required": False,
                              "description": "the id of the last event received, when reconnecting",
                              "schema": {"type": "string"}})),
        "/query/{question_id}": {"delete": {
            "summary": "Cancel a question not generated yet (its asker or an admin key); idempotent",
            "description": "The question is cancelled in the database before the answer, so no LLM call for it "
                           "starts afterwards; a call already in flight finishes and its answer is stored. The "
                           "answer is the question's status after the request (completed, failed or cancelled "
                           "stay as they are).",
            "tags": ["qastream"], "parameters": [qid],
            "responses": {"200": json_body("the question's status now", ref("Cancelled")),
                          "404": error("unknown question id, or a question the key did not ask"),
                          "405": WRONG_METHOD, "503": UNAVAILABLE}}},
        "/batches": {
            "post": {
                "summary": "Submit a batch of questions (JSON, or NDJSON with one question object per line)",
                "tags": ["batches"],
                "parameters": [
                    {"name": "skip_invalid", "in": "query", "required": False, "schema": {"type": "boolean"},
                     "description": "accept the batch without its invalid lines instead of refusing it"},
                    {"name": "webhook_url", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "the webhook of an NDJSON batch (a JSON body's own field wins)"}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": ref("BatchRequest")},
                    "application/x-ndjson": {"schema": {"type": "string",
                                                        "description": "one BatchQuestion object per line"}}}},
                "responses": {
                    "202": json_body("stored; questions already answered count as completed",
                                     ref("BatchAccepted")),
                    "400": {"description": "bad lines (each with its line number), no valid line, a bad "
                                           "webhook_url or metadata, or a body that is not JSON",
                            "content": {"application/json": {"schema": ref("BatchRefused")}}},
                    "405": WRONG_METHOD,
                    "408": error("the body did not arrive within QASTREAM_BODY_TIMEOUT_SECONDS"),
                    "413": error("more lines than QASTREAM_BATCH_MAX_QUESTIONS or a body larger than "
                                 "QASTREAM_BATCH_MAX_BYTES"),
                    "415": error("Content-Type is neither application/json nor application/x-ndjson"),
                    "503": UNAVAILABLE}},
            "get": {
                "summary": "The latest batches, newest first (a key without admin sees its own)",
                "tags": ["batches"],
                "parameters": [{"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}}],
                "responses": {
                    "200": json_body("batches", {"type": "object", "properties": {
                        "batches": {"type": "array", "items": ref("Batch")}}}),
                    "400": error("limit is not an integer from 1 to 50"), "405": WRONG_METHOD,
                    "503": UNAVAILABLE}}},
        "/batches/{batch_id}": {
            "get": {"summary": "A batch's status, counts, timestamps, metadata and webhook", "tags": ["batches"],
                    "parameters": [path_param("batch_id", "batch id from POST /batches")],
                    "responses": {"200": json_body("the batch", ref("Batch")),
                                  "404": error("unknown batch, or a batch of another key"),
                                  "405": WRONG_METHOD, "503": UNAVAILABLE}},
            "delete": {"summary": "Cancel a batch: its questions not generated yet are never generated; idempotent",
                       "tags": ["batches"],
                       "parameters": [path_param("batch_id", "batch id from POST /batches")],
                       "responses": {"200": json_body("the batch after the cancel (cancelling until the calls in "
                                                      "flight finish, then cancelled)", ref("Batch")),
                                     "404": error("unknown batch, or a batch of another key"),
                                     "405": WRONG_METHOD, "503": UNAVAILABLE}}},
        "/batches/{batch_id}/results": {"get": {
            "summary": "The batch's results as NDJSON, one line per question line of the batch, in order",
            "tags": ["batches"], "parameters": [path_param("batch_id", "batch id from POST /batches")],
            "responses": {
                "200": text_body("lines of {custom_id, question_id, status, answer, score, attempts, low_quality, "
                                 "error}; answer, score, attempts and low_quality are null until completed",
                                 "application/x-ndjson"),
                "404": error("unknown batch, or a batch of another key"), "405": WRONG_METHOD,
                "503": UNAVAILABLE}}},
        "/metrics": get("Figures as JSON", {"200": json_body("figures", ref("Metrics")), "503": UNAVAILABLE}),
        "/metrics/prometheus": get("Figures in the Prometheus text format", {
            "200": text_body("exposition text", "text/plain"), "503": UNAVAILABLE}),
        "/health": get("Readiness: tables recovered, no rebalance in progress, broker, database and Redis answer", {
            "200": json_body("ready", ref("Health")), "503": json_body("not ready yet", ref("Health"))}),
        "/": get("Redirects to the dashboard", {"302": {"description": "Location: /dashboard"}}),
        "/dashboard": get("The live dashboard", {"200": text_body(
            "HTML page, open to all; its script sends the API key typed into its key form (shown on a 401, "
            "kept in sessionStorage) and shows only the panels the key's scopes allow", "text/html")}),
        "/static/{name}": get("The dashboard's script and style sheet", {
            "200": text_body("the file", "text/javascript"), "404": error("no such file")},
            parameters=(path_param("name", "file name, e.g. dashboard.js"),)),
        "/answers/latest": get("The most recently stored answers, newest first", {
            "200": json_body("answers", ref("LatestAnswers")),
            "400": error(f"limit is not an integer from 1 to {MAX_LATEST}"), "503": UNAVAILABLE},
            parameters=({"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LATEST, "default": 20}},)),
        "/openapi.json": get("This document", {"200": json_body("OpenAPI 3.1", OBJECT)}),
        "/table/": get("Faust: the tables of this app", {
            "200": json_body("name, help and partitions of each table", {"type": "array", "items": OBJECT})},
            tags=FAUST),
        "/table/{name}/": get("Faust: every entry of a table this worker holds", {
            "200": json_body("key -> value", OBJECT), "404": error("unknown table")},
            tags=FAUST, parameters=(TABLE_NAME,)),
        "/table/{name}/{key}/": get("Faust: one table entry, routed to the worker owning the key", {
            "200": json_body("the value", OBJECT), "404": error("unknown table or key"),
            "503": UNAVAILABLE}, tags=FAUST, parameters=(TABLE_NAME, TABLE_KEY)),
        "/router/": get("Faust: which worker owns which partitions", {"200": json_body("assignment", OBJECT)},
                        tags=FAUST),
        "/router/topics": get("Faust: partition owners per topic", {"200": json_body("assignment", OBJECT)},
                              tags=FAUST),
        "/router/{name}/": get("Faust: partition owners of a table", {
            "200": json_body("worker URL -> partitions", OBJECT), "404": error("unknown table")},
            tags=FAUST, parameters=(TABLE_NAME,)),
        "/router/{name}/{key}/": get("Faust: the worker owning a key of a table", {
            "200": json_body("the worker's URL", OBJECT), "404": error("unknown table"), "503": UNAVAILABLE},
            tags=FAUST, parameters=(TABLE_NAME, TABLE_KEY)),
    }


UNAUTHENTICATED = {**error("QASTREAM_AUTH=required and the Authorization header is missing, is not "
                           "`Bearer <key>`, or names an unknown or revoked key"),
                   "headers": {"WWW-Authenticate": {"schema": {"type": "string"},
                                                    "description": "`Bearer realm=\"qastream\"`"}}}
OVER_RATE = {**error("the key is over its rate (a token bucket: --rate requests/s, bursts of --burst, shared by "
                     "every worker through Redis): retry after the Retry-After seconds"),
             "headers": {"Retry-After": {"schema": {"type": "integer"}}}}
OVER_IN_FLIGHT = {**error("the key is over its rate, or has its max_in_flight questions unanswered (Retry-After: "
                          "QASTREAM_IN_FLIGHT_RETRY_AFTER_SECONDS): retry after the Retry-After seconds"),
                  "headers": {"Retry-After": {"schema": {"type": "integer"}}}}
SECURITY_SCHEMES = {"bearer": {
    "type": "http", "scheme": "bearer",
    "description": "An API key from `qastream keys create NAME --scope ...`, needed when QASTREAM_AUTH=required. "
                   "Scopes: submit (POST /query, POST /batches, DELETE of the key's own questions and batches), "
                   "read (GET /status, its /events, /answers/latest and /batches, of the key's own questions and "
                   "batches), metrics (/metrics), admin (every route and every question)."}}


def secured(path: str, item: dict[str, Any]) -> dict[str, Any]:
    """``item`` with the scope each method needs and the 401/403 it may answer (open routes need no key)."""
    return {method: secured_operation(path, method, op) for method, op in item.items()}


def secured_operation(path: str, method: str, op: dict[str, Any]) -> dict[str, Any]:
    scope = required_scope(path, method)
    if scope is None:
        return {**op, "security": []}
    lacks = "the admin scope" if scope == Scope.ADMIN else f"the {scope} scope, or admin"
    bounded = (path, method) in (("/query", "post"), ("/batches", "post"))
    refused = {"401": UNAUTHENTICATED, "403": error(f"the key lacks {lacks}"),
               "429": OVER_IN_FLIGHT if bounded else OVER_RATE}
    note = f" Needs the `{scope}` scope" + ("." if scope == Scope.ADMIN else " (or `admin`).")
    return {**op, "description": op.get("description", op["summary"]) + note,
            "responses": {**op["responses"], **refused}}


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "qastream", "version": qastream.__version__,
                 "description": "Asynchronous LLM question answering on Faust. Every worker serves this API."},
        "paths": {path: secured(path, item) for path, item in paths().items()},
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
        "security": [{"bearer": []}],
    }


@app.page("/openapi.json")
class OpenAPIView(web.View):
    """The OpenAPI description of this API."""

    async def get(self, request: web.Request) -> web.Response:
        return self.json(document())
