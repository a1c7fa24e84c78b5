"""Webhook deliveries as data: event kinds, delivery ids, the signature, the body, the back-off.

Pure functions, so every rule is a table-driven unit test.  Where a delivery
goes and whether it may go there at all is :mod:`qastream.policy.webhook_targets`;
sending it is :mod:`qastream.services.webhooks` and :mod:`qastream.agents.webhooks`.

A delivery is one event for one subject (a batch, a question) to one URL.  Its
id is derived from what it announces, so announcing the same thing twice (a
stage that crashed after scheduling and runs again) names the same delivery,
which the database holds once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Mapping, Optional, Sequence

#: Header with ``sha256=<hex HMAC-SHA256 of the exact body bytes>``, keyed by ``QASTREAM_WEBHOOK_SECRET``.
SIGNATURE_HEADER = "X-Qastream-Signature"
#: Header with the delivery id: the same on every attempt of a delivery, so a receiver can drop repeats.
DELIVERY_HEADER = "X-Qastream-Delivery"
#: Header with the event kind (``question.completed`` ...), so a receiver can route before parsing.
EVENT_HEADER = "X-Qastream-Event"
#: Header with the attempt number, 1-based (informative: the signature does not cover it).
ATTEMPT_HEADER = "X-Qastream-Attempt"
SIGNATURE_PREFIX = "sha256="


class EventKind(StrEnum):
    """What a webhook announces (the ``type`` of the body and the ``X-Qastream-Event`` header)."""

    BATCH_COMPLETED = "batch.completed"
    BATCH_CANCELLED = "batch.cancelled"
    QUESTION_COMPLETED = "question.completed"
    QUESTION_FAILED = "question.failed"
    QUESTION_CANCELLED = "question.cancelled"


class DeliveryState(StrEnum):
    """Where a delivery is (the ``state`` column of ``webhook_deliveries``)."""

    #: Not yet answered with a 2xx; attempts remain.
    PENDING = "pending"
    #: A receiver answered 2xx; nothing more is sent.
    DELIVERED = "delivered"
    #: Every attempt failed, or the target was refused; nothing more is sent.
    FAILED = "failed"


class Step(StrEnum):
    """What a message on the deliveries topic asks the ``deliver_webhooks`` agent to do."""

    #: Make attempt ``attempt`` now.
    SEND = "send"
    #: Park until ``due_at``, then make attempt ``attempt``.
    WAIT = "wait"
    #: The release timer says a parked delivery is due.
    RELEASE = "release"


def delivery_id(kind: EventKind | str, subject_id: str, epoch: int = 1) -> str:
    """The id of the delivery announcing ``kind`` for ``subject_id``: 32 hex digits, stable across re-runs.

    ``epoch`` tells apart a question that failed, was submitted again and
    failed again: a new submission is a new event.  Batches have one epoch.
    """
    return hashlib.sha256(f"{kind}\x00{subject_id}\x00{epoch}".encode()).hexdigest()[:32]


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact body bytes with ``secret``."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """Whether ``header`` is the signature of ``body`` (what a receiver does; compared in constant time)."""
    return hmac.compare_digest(signature(secret, body), header)


def request_headers(secret: str, body: bytes, delivery: str, kind: str, attempt: int) -> dict[str, str]:
    """The headers of one attempt."""
    return {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, body),
            DELIVERY_HEADER: delivery, EVENT_HEADER: str(kind), ATTEMPT_HEADER: str(attempt),
            "User-Agent": "qastream-webhooks"}


def event_body(kind: EventKind | str, delivery: str, subject_id: str, data: Mapping[str, Any], created_at: float) -> str:
    """The JSON text POSTed: ``{"id", "type", "subject_id", "created_at", "data"}``.

    Built once when the delivery is scheduled and stored with it, so every
    attempt sends the same bytes under the same signature.
    """
    return json.dumps({"id": delivery, "type": str(kind), "subject_id": subject_id,
                       "created_at": round(created_at, 3), "data": dict(data)},
                      ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Backoff:
    """How many attempts a delivery gets and how long it waits between them."""

    max_attempts: int = 8
    base_seconds: float = 5.0
    max_seconds: float = 600.0


def retry_delay(backoff: Backoff, attempt: int) -> Optional[float]:
    """Seconds to wait after failed attempt ``attempt`` (1-based) before the next; ``None`` once it was the last.

    Doubles from ``base_seconds``, capped at ``max_seconds``.
    """
    if attempt >= backoff.max_attempts:
        return None
    return min(backoff.max_seconds, backoff.base_seconds * 2 ** (attempt - 1))


def is_success(status: int) -> bool:
    """A receiver took the event: any 2xx.  A 3xx is not followed (the target was checked, not its redirect)."""
    return 200 <= status <= 299


@dataclass(frozen=True)
class Verdict:
    """What follows an attempt: the delivery's new state and, while pending, the wait before the next attempt."""

    state: DeliveryState
    retry_in: Optional[float] = None


def judge(backoff: Backoff, attempt: int, status: Optional[int], refused: bool) -> Verdict:
    """The state after attempt ``attempt`` answered ``status`` (``None``: no answer), or was ``refused``.

    A refused target fails at once: the policy, not the receiver, said no.
    """
    if status is not None and is_success(status):
        return Verdict(DeliveryState.DELIVERED)
    delay = None if refused else retry_delay(backoff, attempt)
    return Verdict(DeliveryState.FAILED) if delay is None else Verdict(DeliveryState.PENDING, delay)


def stale_after(backoff: Backoff, timeout: float, margin: float) -> float:
    """Seconds a pending delivery's row may stay untouched before its message counts as lost.

    Every attempt touches the row; between two, a delivery waits at most the
    longest back-off, plus a wait for a slot (one time-out) and the attempt
    itself (another).
    """
    return backoff.max_seconds + 2 * timeout + margin


@dataclass(frozen=True)
class Notification:
    """A request to announce ``kind`` for ``subject_id`` at ``url`` with ``data`` (see ``qastream.webhooks.schedule``)."""

    kind: EventKind
    subject_id: str
    url: str
    data: Mapping[str, Any]
    epoch: int = 1


def question_notifications(kind: EventKind, outcomes: Sequence[tuple[str, int, Mapping[str, Any]]],
                           targets: Mapping[str, str]) -> list[Notification]:
    """The notifications for questions that ended: one per ``(question_id, epoch, data)`` with a target URL.

    ``targets`` is question id -> the ``webhook_url`` stored on the question;
    a question without one is not announced.  The last outcome of a question
    id in ``outcomes`` wins (a batch may hold a question twice).
    """
    latest = {qid: (epoch, data) for qid, epoch, data in outcomes}
    return [Notification(kind, qid, targets[qid], data, epoch)
            for qid, (epoch, data) in latest.items() if targets.get(qid)]


def failure_data(question_id: str, question_text: str, error_class: str, message: str) -> dict[str, Any]:
    """The ``data`` of a ``question.failed`` event."""
    return {"question_id": question_id, "question_text": question_text, "status": "failed",
            "error": {"class": error_class, "message": message}}
