"""``GET /openapi.json``: an OpenAPI 3.1 description of every HTTP route of a worker.

Written by hand rather than generated: Faust views carry no schemas.  A test
validates the document and checks that every route in the worker's aiohttp
router, including Faust's own ``/table`` and ``/router`` views, is described.
"""

from __future__ import annotations

from typing import Any

from faust import web

import qastream
from qastream.app import app, settings
from qastream.db.recent import MAX_LATEST
from qastream.policy.access import Scope, required_scope
from qastream.policy.lifecycle import STAGE_STATE, TERMINAL, Stage, State
from qastream.policy.live import event_name
from qastream.policy.webhook_targets import MAX_URL_CHARS
from qastream.policy.webhooks import DeliveryState, EventKind

NUMBER_OR_NULL = {"type": ["number", "null"]}
OBJECT = {"type": "object"}
COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref("Error")}}}


def json_body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def text_body(description: str, content_type: str) -> dict[str, Any]:
    return {"description": description, "content": {content_type: {"schema": {"type": "string"}}}}


WRONG_METHOD = {"description": "the path does not accept this method"}
UNAVAILABLE = error("the database or broker did not answer in time, the worker is at its limit of requests in "
                    "flight (QASTREAM_MAX_REQUESTS_IN_FLIGHT) or rebalancing: retry after the Retry-After header")


def get(summary: str, responses: dict[str, Any], *, tags: tuple[str, ...] = ("qastream",),
        parameters: tuple[dict, ...] = ()) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": list(tags),
                                 "responses": {**responses, "405": WRONG_METHOD}}
    if parameters:
        operation["parameters"] = list(parameters)
    return {"get": operation}


def path_param(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


QUESTION_ID = {"type": "string", "pattern": "^[0-9a-f]{16}$",
               "description": "first 16 hex digits of SHA-256 of the normalised question text"}

RESULT = {
    "type": "object",
    "required": ["question_id", "question_text", "answer", "score", "low_quality", "processing_attempts"],
    "properties": {
        "question_id": QUESTION_ID, "question_text": {"type": "string"}, "answer": {"type": "string"},
        "score": {**NUMBER_OR_NULL, "description": "BERTScore F1; null when there was no reference answer"},
        "low_quality": {"type": "boolean"}, "processing_attempts": {"type": "integer"},
        "error_retries": {"type": "integer"}, "total_processing_time_ms": NUMBER_OR_NULL,
        "model": {"type": ["string", "null"]},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "QueryRequest": {
        "type": "object", "required": ["question_text"],
        "properties": {
            "question_text": {"type": "string", "minLength": 1, "maxLength": settings.max_question_chars,
                              "description": "the question (not blank; no NUL, no lone surrogate)"},
            "original_answer": {"type": ["string", "null"], "maxLength": settings.max_question_chars,
                                "description": "reference answer the LLM's answer is scored against "
                                               "(no NUL, no lone surrogate)"},
            "webhook_url": {"type": ["string", "null"], "maxLength": MAX_URL_CHARS, "format": "uri",
                            "description": "http(s) URL that receives a signed `question.completed` or "
                                           "`question.failed` event when the question ends (README 'Webhooks'); "
                                           "loopback, private and link-local hosts are refused unless listed in "
                                           "QASTREAM_WEBHOOK_ALLOWED_HOSTS; refused when no "
                                           "QASTREAM_WEBHOOK_SECRET is set. An answer given at once (200) "
                                           "announces nothing"},
        },
    },
    "Accepted": {
        "type": "object", "required": ["message", "question_id", "status"],
        "properties": {"message": {"type": "string"}, "question_id": QUESTION_ID,
                       "status": {"type": "string", "enum": list(State)}},
    },
    "Found": {
        "type": "object", "required": ["status", "source", "result"],
        "properties": {"status": {"const": "found"}, "source": {"type": "string", "enum": ["cache", "database"]},
                       "result": ref("Result")},
    },
    "Result": RESULT,
    "Status": {
        "type": "object", "required": ["question_id", "status", "source"],
        "properties": {
            "question_id": QUESTION_ID, "status": {"type": "string", "enum": list(State)},
            "stage": {"type": "string", "enum": list(Stage)}, "attempt": {"type": "integer"},
            "processing_attempts": {"type": "integer"}, "error_retries": {"type": "integer"},
            "epoch": {"type": "integer"}, "question_text": {"type": "string"},
            "accepted_at": {"type": "number"}, "updated_at": {"type": "number"},
            "source": {"type": "string", "enum": ["status_table", "database"]},
            "detail": {"type": ["string", "null"]}, "error": OBJECT, "result": ref("Result"),
        },
    },
    "Health": {
        "type": "object", "required": ["ready"],
        "properties": {"ready": {"type": "boolean"}, "recovered": {"type": "boolean"},
                       "assigned": {"type": "boolean"},
                       "dependencies": {"type": "object", "additionalProperties": {"type": "string"},
                                        "description": "broker, database, redis (when configured): `ok` or why not"},
                       "down": {"type": "array", "items": {"type": "string"},
                                "description": "the conditions and dependencies that do not hold"},
                       "admission": {"type": "object", "additionalProperties": {"type": "integer"},
                                     "description": "requests in flight, the limit, admitted and refused"}},
    },
    "Percentiles": {
        "type": "object",
        "properties": {"p50": NUMBER_OR_NULL, "p95": NUMBER_OR_NULL, "p99": NUMBER_OR_NULL, "max": NUMBER_OR_NULL,
                       "count": {"type": "integer"}, "window": {"type": "integer"}},
    },
    "Metrics": {
        "type": "object",
        "description": "README 'Figures' documents every field.",
        "required": ["total_responses", "average_score", "attempts_distribution", "score_distribution",
                     "questions_by_status", "processing_time_ms", "throughput", "cache_info", "llm",
                     "circuit_breaker", "consumer_lag", "errors_by_class", "retries", "dead_letters"],
        "properties": {
            "total_responses": {"type": "integer"}, "scored_responses": {"type": "integer"},
            "average_score": NUMBER_OR_NULL, "low_quality_responses": {"type": "integer"},
            "attempts_distribution": COUNTS, "score_distribution": COUNTS, "questions_by_status": COUNTS,
            "batches_by_status": COUNTS,
            "dead_letters": {"type": "integer"}, "dead_letters_by_class": COUNTS,
            "error_retries_of_completed": {"type": "integer"}, "processing_time_ms": ref("Percentiles"),
            "throughput": {"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": {"type": "number"}}},
            "cache_info": OBJECT, "queries": COUNTS,
            "llm": {"type": "object", "properties": {"latency_ms": ref("Percentiles"),
                                                     "error_latency_ms": ref("Percentiles")}},
            "scorer": OBJECT, "circuit_breaker": OBJECT, "llm_slots": OBJECT,
            "parked_retries": COUNTS, "poison_messages": COUNTS, "errors_by_class": COUNTS,
            "retries": OBJECT, "worker_counts": OBJECT, "stalled_requeued": OBJECT, "webhooks": OBJECT,
            "consumer_lag": {"type": "object", "required": ["total", "topics"],
                             "properties": {"total": {"type": "integer"}, "topics": OBJECT}},
            "worker": OBJECT, "generated_at": {"type": "number"},
        },
    },
    "BatchQuestion": {
        "type": "object", "required": ["question_text"],
        "description": "One line of a batch: checked exactly as a POST /query body, plus the client's custom_id.",
        "properties": {"question_text": {"type": "string", "minLength": 1},
                       "original_answer": {"type": ["string", "null"]},
                       "custom_id": {"type": ["string", "null"], "maxLength": 256}},
    },
    "BatchRequest": {
        "type": "object", "required": ["questions"],
        "properties": {"questions": {"type": "array", "items": ref("BatchQuestion")},
                       "webhook_url": {"type": ["string", "null"], "format": "uri",
                                       "description": "http(s) URL called when the batch ends"},
                       "metadata": {"type": ["object", "null"], "description": "kept and shown as given (8 KB of JSON)"}},
    },
    "RequestCounts": {
        "type": "object", "required": ["total", "completed", "low_quality", "failed", "cancelled"],
        "description": "completed + failed + cancelled <= total (the rest are in flight); low_quality is the "
                       "part of completed kept below the quality threshold",
        "properties": {name: {"type": "integer"} for name in ("total", "completed", "low_quality", "failed",
                                                                "cancelled")},
    },
    "Batch": {
        "type": "object", "required": ["batch_id", "status", "request_counts"],
        "properties": {"batch_id": {"type": "string"},
                       "status": {"enum": ["in_progress", "cancelling", "completed", "cancelled"]},
                       "request_counts": ref("RequestCounts"), "created_at": {"type": "number"},
                       "updated_at": {"type": "number"}, "finished_at": NUMBER_OR_NULL,
                       "cancelled_at": NUMBER_OR_NULL, "metadata": {"type": ["object", "null"]},
                       "webhook": {"type": "object", "description": "the webhook URL (null without one) and "
                                                                    "its delivery state", "properties": {
                           "url": {"type": ["string", "null"]}, "state": {"type": ["string", "null"]},
                           "delivery": {"type": ["object", "null"], "description": "the end-of-batch delivery "
                                        "(state, attempts, last status and error), null until scheduled"}}}},
    },
    "BatchAccepted": {
        "type": "object", "required": ["batch_id", "status", "request_counts"],
        "properties": {"batch_id": {"type": "string"}, "status": {"const": "in_progress"},
                       "request_counts": ref("RequestCounts"),
                       "skipped_lines": {"type": "array", "items": ref("LineError")}},
    },
    "LineError": {"type": "object", "required": ["line", "error"],
                  "properties": {"line": {"type": "integer"}, "error": {"type": "string"}}},
    "BatchRefused": {
        # A refusal of the whole body (not JSON, no questions list, a bad webhook_url) has no lines to list.
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string"}, "invalid_count": {"type": "integer"},
                       "invalid_lines": {"type": "array", "items": ref("LineError"),
                                         "description": "the first 100 bad lines"}},
    },
    "Cancelled": {
        "type": "object", "required": ["question_id", "status", "cancelled"],
        "properties": {"question_id": {"type": "string"}, "status": {"type": "string"},
                       "cancelled": {"type": "boolean"}},
    },
    "WebhookDelivery": {
        "type": "object", "description": "one webhook event and how its delivery went (qastream.db.webhooks)",
        "required": ["delivery_id", "event", "url", "state", "attempts"],
        "properties": {
            "delivery_id": {"type": "string", "description": "X-Qastream-Delivery: the same on every attempt"},
            "event": {"type": "string", "enum": list(EventKind)}, "url": {"type": "string"},
            "state": {"type": "string", "enum": list(DeliveryState)}, "attempts": {"type": "integer"},
            "last_status": {"type": ["integer", "null"]}, "last_error": {"type": ["string", "null"]},
            "created_at": {"type": "number"}, "updated_at": {"type": "number"}, "delivered_at": NUMBER_OR_NULL,
        },
    },
    "LatestAnswers": {
        "type": "object", "required": ["answers"],
        "properties": {"answers": {"type": "array", "items": {
            "allOf": [ref("Result")], "properties": {"stored_at": {"type": "number"}}}}},
    },
}

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
