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
from qastream.policy.lifecycle import Stage, State

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
            "dead_letters": {"type": "integer"}, "dead_letters_by_class": COUNTS,
            "error_retries_of_completed": {"type": "integer"}, "processing_time_ms": ref("Percentiles"),
            "throughput": {"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": {"type": "number"}}},
            "cache_info": OBJECT, "queries": COUNTS,
            "llm": {"type": "object", "properties": {"latency_ms": ref("Percentiles"),
                                                     "error_latency_ms": ref("Percentiles")}},
            "scorer": OBJECT, "circuit_breaker": OBJECT, "llm_slots": OBJECT,
            "parked_retries": COUNTS, "poison_messages": COUNTS, "errors_by_class": COUNTS,
            "retries": OBJECT, "worker_counts": OBJECT, "stalled_requeued": OBJECT,
            "consumer_lag": {"type": "object", "required": ["total", "topics"],
                             "properties": {"total": {"type": "integer"}, "topics": OBJECT}},
            "worker": OBJECT, "generated_at": {"type": "number"},
        },
    },
    "LatestAnswers": {
        "type": "object", "required": ["answers"],
        "properties": {"answers": {"type": "array", "items": {
            "allOf": [ref("Result")], "properties": {"stored_at": {"type": "number"}}}}},
    },
}

FAUST = ("faust",)
TABLE_NAME = path_param("name", "table name: status, attempts, overload-parking, quota-parking")
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
                             "cannot store (NUL, a lone surrogate)"),
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
                   "Scopes: submit (POST /query), read (GET /status and /answers/latest, of the key's own "
                   "questions), metrics (/metrics), admin (every route and every question)."}}


def secured(path: str, item: dict[str, Any]) -> dict[str, Any]:
    """``item`` with the scope its route needs and the 401/403 it may answer (open routes need no key)."""
    scope = required_scope(path)
    if scope is None:
        return {method: {**op, "security": []} for method, op in item.items()}
    lacks = "the admin scope" if scope == Scope.ADMIN else f"the {scope} scope, or admin"
    refused = {"401": UNAUTHENTICATED, "403": error(f"the key lacks {lacks}"),
               "429": OVER_IN_FLIGHT if path == "/query" else OVER_RATE}
    note = f" Needs the `{scope}` scope" + ("." if scope == Scope.ADMIN else " (or `admin`).")
    return {method: {**op, "description": op.get("description", op["summary"]) + note,
                     "responses": {**op["responses"], **refused}} for method, op in item.items()}


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
