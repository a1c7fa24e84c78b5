"""The schemas of the OpenAPI document (``components/schemas``) and the small builders its paths use.

Apart from :mod:`qastream.web.openapi` so that the document's records (what a
question, a batch, a webhook delivery look like) read in one place and the
paths (which route answers what) in another.
"""

from __future__ import annotations

from typing import Any

from qastream.app import settings
from qastream.policy.lifecycle import Stage, State
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
        "usage": {
            "type": "object",
            "description": "what the LLM spent on the question, summed over its attempts (the server's own counts); "
                           "wasted_tokens: prompt and generated tokens of attempts whose answer was not kept; "
                           "first_model: the model of attempt 1",
            "properties": {
                **{k: {"type": "integer"} for k in ("prompt_tokens", "eval_tokens", "wasted_tokens")},
                "eval_ms": {"type": "number"}, "load_ms": {"type": "number"},
                "first_model": {"type": ["string", "null"]},
            },
        },
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
            "llm": {"type": "object", "properties": {
                "latency_ms": ref("Percentiles"), "error_latency_ms": ref("Percentiles"),
                "servers": {"type": "array", "description": "One entry per LLM server, in QASTREAM_OLLAMA_URL order.",
                            "items": {"type": "object", "required": ["url", "in_flight", "calls", "failures_by_class",
                                                                     "breaker"],
                                      "properties": {"url": {"type": "string"}, "in_flight": {"type": "integer"},
                                                     "waiting": {"type": "integer"}, "calls": {"type": "integer"},
                                                     "failures_by_class": COUNTS, "breaker": OBJECT}}}}},
            "scorer": OBJECT, "llm_slots": OBJECT,
            "circuit_breaker": {"type": "object", "required": ["state", "questions_held", "servers"],
                                "properties": {"state": {"type": "string", "enum": ["closed", "half_open", "open"]},
                                               "questions_held": {"type": "integer"},
                                               "seconds_until_probe": {"type": "number"},
                                               "servers": {"type": "object",
                                                           "additionalProperties": {"type": "string"}}}},
            "parked_retries": COUNTS, "poison_messages": COUNTS, "errors_by_class": COUNTS,
            "retries": OBJECT, "worker_counts": OBJECT, "stalled_requeued": OBJECT, "webhooks": OBJECT,
            "consumer_lag": {"type": "object", "required": ["total", "topics"],
                             "properties": {"total": {"type": "integer"}, "topics": OBJECT}},
            "worker": OBJECT, "generated_at": {"type": "number"},
            "tokens": {"type": "object", "properties": {
                **{k: {"type": "integer"} for k in ("prompt_tokens", "eval_tokens", "wasted_tokens")},
                "tokens_per_answer": NUMBER_OR_NULL, "eval_tokens_per_second": NUMBER_OR_NULL}},
            "llm_tokens": {"type": "array", "items": {"type": "object", "properties": {
                "model": {"type": "string"}, "server": {"type": "string"},
                **{k: {"type": "integer"} for k in ("calls", "prompt_tokens", "eval_tokens")},
                "eval_seconds": {"type": "number"}, "load_seconds": {"type": "number"},
                "eval_tokens_per_second": NUMBER_OR_NULL}}},
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
