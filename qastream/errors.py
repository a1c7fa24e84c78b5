"""One exception hierarchy, and the classification of LLM failures.

Every exception qastream defines is a :class:`QAStreamError` and exactly one
of :class:`RetryableError` (the same work can succeed later) or
:class:`PermanentError` (it cannot until something changes); the exception's
docstring says when it is raised and is its default message.

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
    """qastream failed on purpose; a subclass says why and whether a retry can help.

    As in procrastinate, the docstring's first line is the default message:
    ``raise SettingsError()`` says what went wrong even without a detail.
    Every qastream exception is a :class:`RetryableError` or a
    :class:`PermanentError`, never both (tests/unit/test_errors.py checks).
    """

    def __init__(self, message: Optional[str] = None, *args: object) -> None:
        super().__init__(message or default_message(type(self)), *args)


def default_message(cls: type) -> str:
    """The first line of the docstring of ``cls``, the message of an error raised without one."""
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0]


class RetryableError(QAStreamError):
    """qastream failed for now: the same request or message can succeed later, unchanged.

    A busy, unreachable or slow dependency.  Its caller retries (the retry
    topics, reconciliation) or tells its client to (503 with ``Retry-After``).
    """


class PermanentError(QAStreamError):
    """qastream cannot do this: it fails again until its input or configuration changes.

    The request gets a 4xx, the question is dead-lettered with the reason, or
    the process stops and says what to fix; nothing retries it.
    """


class LLMFailure:
    """What a failed LLM call carries: its error class, status code, message, the server's Retry-After, and which
    server failed.

    Not an exception itself: mixed into :class:`LLMRetryableError` and
    :class:`LLMPermanentError`; :func:`llm_call_error` picks between them.
    """

    def __init__(self, error_class: ErrorClass, status_code: int, message: str,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(f"{error_class} ({status_code}): {message}")  # type: ignore[call-arg]
        self.error_class = error_class
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after
        #: The server that failed (set by the LLM pool), so the retry can go to another one.
        self.server: Optional[str] = None
        #: The failure belongs to an outage of that server (its breaker was or went open): no retry budget used.
        self.outage = False


class LLMRetryableError(LLMFailure, RetryableError):
    """The LLM server is busy, over quota or unreachable for now (``overload``, ``quota``); retried after a delay."""


class LLMPermanentError(LLMFailure, PermanentError):
    """The LLM server refused a call a retry cannot change (``permanent``: 4xx, unknown model); dead-lettered."""


#: Every failed LLM call, for ``except`` and ``pytest.raises``; ``error_class`` says the route.
LLM_CALL_ERRORS = (LLMRetryableError, LLMPermanentError)


def llm_call_error(error_class: ErrorClass, status_code: int, message: str,
                   retry_after: Optional[float] = None) -> LLMRetryableError | LLMPermanentError:
    """The exception for an LLM failure of ``error_class`` (see :func:`classify`)."""
    kind = LLMPermanentError if error_class == ErrorClass.PERMANENT else LLMRetryableError
    return kind(error_class, status_code, message, retry_after)


class RowRejected(PermanentError):
    """The database refused this row (a value it cannot store, a constraint); retrying cannot help.

    Its request gets a 400, or its question is dead-lettered with ``reason``:
    the row fails alone, never the batch it was written with.
    """

    def __init__(self, question_id: str, reason: str) -> None:
        super().__init__(f"the database rejected question {question_id}: {reason}")
        self.question_id = question_id
        self.reason = reason


class RequestError(PermanentError):
    """A client sent a request qastream will not accept; carries the HTTP status (4xx).

    Raised by the request parsers and views (:mod:`qastream.web.requests`) and
    rendered by ``@guarded``: the same request gets the same answer again.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Unavailable(RetryableError):
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
