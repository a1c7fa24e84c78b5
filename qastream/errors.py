"""One exception hierarchy, and the classification of LLM failures.

The class of an error decides its route through the topic graph:

* ``overload`` -- the server is busy or unreachable for now (503, other 5xx,
  connection refused or reset, client time-out, an error in the middle of a
  streamed answer).  Retried with exponential back-off.
* ``quota`` -- the caller exceeded a quota (429).  Retried after a fixed delay
  or the server's ``Retry-After``.
* ``permanent`` -- retrying cannot help (400, 404 model not found, other 4xx,
  anything unrecognised).  Dead-lettered.

``scoring`` is not an LLM failure: the scorer raised for an answer even when
scoring it alone (qastream.agents.validate).  Dead-lettered with the reason.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Optional


class ErrorClass(StrEnum):
    """Why a question left the happy path; decides its route (the ``error_class`` of a job and a failure row)."""

    OVERLOAD = "overload"
    QUOTA = "quota"
    PERMANENT = "permanent"
    #: The database refused to store the question's row (not an LLM class).
    REJECTED = "rejected"
    #: The scorer failed on the answer, alone (not an LLM class).
    SCORING = "scoring"


#: ``ResponseError.status_code`` the ollama client uses for an error that
#: arrives inside a streamed 200 answer.
MID_STREAM = -1
#: Status code qastream records for failures that never got an HTTP answer.
NO_RESPONSE = 0


class QAStreamError(Exception):
    """Base of every error qastream raises on purpose."""


class LLMCallError(QAStreamError):
    """An LLM call failed; ``error_class`` says whether a retry can help."""

    def __init__(self, error_class: ErrorClass, status_code: int, message: str,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(f"{error_class} ({status_code}): {message}")
        self.error_class = error_class
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after


class RowRejected(QAStreamError):
    """The database refused this row (a value it cannot store, a constraint); retrying cannot help.

    Its request gets a 400, or its question is dead-lettered with ``reason``:
    the row fails alone, never the batch it was written with.
    """

    def __init__(self, question_id: str, reason: str) -> None:
        super().__init__(f"the database rejected question {question_id}: {reason}")
        self.question_id = question_id
        self.reason = reason


class RequestError(QAStreamError):
    """A client sent a request qastream will not accept; carries the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Unavailable(QAStreamError):
    """qastream cannot answer this request in time (overloaded, or a dependency does not answer).

    The request gets 503 with ``Retry-After``: the failure is ours and worth
    retrying, and nothing the client sent is lost (an accepted question is in
    the database and reconciliation enqueues it).
    """

    def __init__(self, reason: str, message: str, question_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.question_id = question_id


def classify(status_code: int) -> ErrorClass:
    """Error class of an LLM failure with this status code.

    ``NO_RESPONSE`` (connection refused or reset, time-out) and
    ``MID_STREAM`` are transient: the server was alive or will be.
    """
    if status_code in (NO_RESPONSE, MID_STREAM) or 500 <= status_code <= 599:
        return ErrorClass.OVERLOAD
    if status_code == 429:
        return ErrorClass.QUOTA
    return ErrorClass.PERMANENT


def signals_outage(status_code: int) -> bool:
    """True when a failure says the LLM server is down or broken, not merely busy.

    A 503 "server busy" comes from a live server shedding load (Ollama's
    queue is full): each question backs off on its own.  No answer at all,
    a time-out, another 5xx or an error in the middle of generation means the
    server itself is in trouble, which is what the circuit breaker is for.
    """
    return classify(status_code) == ErrorClass.OVERLOAD and status_code != 503


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header given in seconds; ``None`` if absent or unusable.

    The HTTP-date form is not used by Ollama-compatible servers; it is
    treated as absent so the configured delay applies.
    """
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
