"""The records on the wire.

Every topic of the question graph carries one record type, :class:`Job`: the
question plus what each stage has added so far.  A single flat type keeps the
graph readable (any stage can forward to any other) and serialises in one pass.
:class:`StatusEvent` is the small progress report every stage sends to the
events topic; :class:`WebhookDelivery` travels the webhook deliveries topic.  Records carry no Faust type metadata on the wire: each topic
declares its value type, so other producers (``qastream load --via kafka``,
``kcat``) can write plain JSON.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import faust

from qastream.policy.lanes import Lane
from qastream.policy.lifecycle import EXPIRE, Stage, StatusRecord
from qastream.policy.usage import usage_of
from qastream.policy.webhooks import Step


class Job(faust.Record, serializer="json", include_metadata=False):
    """A question on its way through the pipeline."""

    question_id: str
    question_text: str
    original_answer: Optional[str] = None
    accepted_at: float = 0.0            # epoch seconds when POST /query accepted it
    epoch: int = 1                      # submission number: a replay starts a new epoch
    attempt: int = 1                    # LLM generation number, 1-based
    retries: int = 0                    # error retries so far (all attempts of this epoch)
    overload_retries: int = 0           # overload retries of the current attempt
    quota_retries: int = 0              # quota retries of the current attempt
    answer: Optional[str] = None
    model: Optional[str] = None
    llm_ms: float = 0.0                 # LLM time spent on this question so far
    score: Optional[float] = None
    first_score: Optional[float] = None
    best_answer: Optional[str] = None
    best_score: Optional[float] = None
    best_attempt: int = 0
    low_quality: bool = False
    error_class: Optional[str] = None
    error_code: Optional[int] = None
    error_message: Optional[str] = None
    retry_after: Optional[float] = None
    outage: bool = False                # failed while the circuit breaker was open: no retry budget used
    due_at: Optional[float] = None      # set on a parked retry released by the timer
    payload: Optional[str] = None       # the raw bytes of an undecodable (poison) message, as text
    # Last, with a default: a message written before lanes existed decodes as interactive, as it was.
    lane: str = Lane.INTERACTIVE        # a Lane; its retries and regenerations go back to its lane's topic
    # What the LLM spent on this question in this epoch (qastream.policy.usage), summed over every
    # generation (regenerations included; a failed call returns no counts).  Defaults, so messages
    # written before token accounting decode as "nothing counted".
    prompt_tokens: int = 0              # prompt tokens evaluated (Ollama's prompt_eval_count), all attempts
    eval_tokens: int = 0                # tokens generated (eval_count), all attempts
    eval_ms: float = 0.0                # generation time the server reported (eval_duration), all attempts
    load_ms: float = 0.0                # model load time the server reported (load_duration), all attempts
    attempt_tokens: int = 0             # prompt + generated tokens of the current attempt's answer
    best_tokens: int = 0                # prompt + generated tokens of the best answer's attempt
    wasted_tokens: int = 0              # prompt + generated tokens of attempts whose answer is not kept
    first_model: Optional[str] = None   # the model that wrote attempt 1's answer
    best_model: Optional[str] = None    # the model that wrote best_answer (kept when attempts run out)
    last_server: Optional[str] = None   # the LLM server the last call failed on: its retry prefers another


class StatusEvent(faust.Record, serializer="json", include_metadata=False):
    """A stage's report of where a question is (see :mod:`qastream.policy.lifecycle`)."""

    question_id: str
    stage: str
    epoch: int
    attempt: int
    retries: int
    accepted_at: float
    at: float
    detail: Optional[str] = None
    result: Optional[dict] = None
    lane: str = Lane.INTERACTIVE        # the question's Lane, so reconciliation re-enqueues it on its lane


class WebhookDelivery(faust.Record, serializer="json", include_metadata=False):
    """One webhook delivery on the deliveries topic, keyed by ``delivery_id``; ``step`` says what to do with it.

    ``body`` is the exact JSON text every attempt POSTs (and signs).
    """

    delivery_id: str
    kind: str
    subject_id: str
    url: str
    body: str
    attempt: int = 1                    # the attempt to make, 1-based
    step: str = Step.SEND
    due_at: Optional[float] = None      # when a waiting delivery is due (``wait`` and ``release``)


def event_for(job: Job, stage: Stage, *, detail: Optional[str] = None,
              result: Optional[dict[str, Any]] = None) -> StatusEvent:
    """The status event that says ``job`` reached ``stage``."""
    return StatusEvent(
        question_id=job.question_id, stage=stage, epoch=job.epoch, attempt=job.attempt,
        retries=job.retries, accepted_at=job.accepted_at, at=time.time(), detail=detail, result=result,
        lane=job.lane,
    )


def expiry_event(record: StatusRecord, now: float) -> StatusEvent:
    """The event that asks ``track`` to drop ``record`` (see :func:`qastream.policy.lifecycle.expires`)."""
    return StatusEvent(
        question_id=record["question_id"], stage=EXPIRE, epoch=record["epoch"], attempt=record["attempt"],
        retries=record["retries"], accepted_at=record["accepted_at"], at=now,
        result={"version": list(record["version"])},
    )


def result_of(job: Job, total_ms: float) -> dict[str, Any]:
    """The answer as users see it (GET /status, POST /query cache hits)."""
    return {
        "question_id": job.question_id,
        "question_text": job.question_text,
        "answer": job.answer,
        "score": job.score,
        "low_quality": job.low_quality,
        "processing_attempts": job.attempt,
        "error_retries": job.retries,
        "total_processing_time_ms": round(total_ms, 1),
        "model": job.model,
        "usage": usage_of(job).as_dict(),
    }
