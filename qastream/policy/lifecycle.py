"""Where a question is: states, stages, and the idempotent fold of status events.

Every stage reports progress as a small :class:`~qastream.models.StatusEvent`;
one agent folds them into the status table with :func:`fold_status`.  Delivery
is at-least-once and events of one question come from different topics, so
they can arrive twice or late.  Each event carries a *version*
``(epoch, attempt, retries, stage rank)`` and the fold keeps the newest: a
redelivered or late event never moves a question backwards, and applying the
same event twice changes nothing.

Cancellation (``DELETE /query``, ``DELETE /batches``) is the one event that
does not fit that order: the canceller knows the question's epoch (from the
database) but not how far its attempt went, so a ``cancelled`` event is
folded apart (:func:`fold_status`): it ends its epoch whatever the attempt,
and within that epoch only ``completed`` can follow it -- the answer of a
call that was already in flight, which is stored.  A ``queued`` or
``generating`` event of the same epoch arriving later (a send that raced the
cancel, a retry, a regeneration) is stale, so the question never looks
as if it were being generated again.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, Optional, TypedDict

from qastream.policy.lanes import lane_of


class State(StrEnum):
    """Where a question is, as users see it (``GET /status``, the database's ``status`` column)."""

    PENDING = "pending"
    PROCESSING = "processing"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Stage(StrEnum):
    """Finer detail within an attempt, in the order they happen (the ``stage`` of a status event)."""

    QUEUED = "queued"
    WAITING_RETRY = "waiting_retry"
    GENERATING = "generating"
    SCORING = "scoring"
    REGENERATING = "regenerating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED})

#: The ``stage`` of an expiry event: not a step in a question's life (it has no state
#: and no rank) but the expiry timer asking ``track`` to drop a finished question from
#: its tables.  Its ``result`` carries the version of the record the timer saw.
EXPIRE = "expire"

#: Keyed by str: a stage decoded from the wire or the changelog is a plain string.
STAGE_STATE: dict[str, State] = {
    Stage.QUEUED: State.PENDING,
    Stage.WAITING_RETRY: State.RETRYING,
    Stage.GENERATING: State.PROCESSING,
    Stage.SCORING: State.PROCESSING,
    Stage.REGENERATING: State.PROCESSING,
    Stage.COMPLETED: State.COMPLETED,
    Stage.FAILED: State.FAILED,
    Stage.CANCELLED: State.CANCELLED,
}
#: Orders events of the same (epoch, attempt, retries).  Explicit because versions are
#: persisted in the status changelog and compared across an upgrade: 5 belonged to the
#: removed stage ``storing`` and stays unused, so completed and failed keep 6 and 7; cancelled,
#: added later, takes 8 (its fold does not rest on the rank alone: see the module docstring).
STAGE_RANK: dict[str, int] = {
    Stage.QUEUED: 0,
    Stage.WAITING_RETRY: 1,
    Stage.GENERATING: 2,
    Stage.SCORING: 3,
    Stage.REGENERATING: 4,
    Stage.COMPLETED: 6,
    Stage.FAILED: 7,
    Stage.CANCELLED: 8,
}

Version = tuple[int, int, int, int]


class StatusEventFields(TypedDict):
    """What :func:`fold_status` and :func:`fold_attempts` read: ``StatusEvent.asdict()``."""

    question_id: str
    stage: Stage          # a plain str when decoded from the events topic; equal to the member
    epoch: int
    attempt: int
    retries: int
    accepted_at: float
    at: float
    detail: Optional[str]
    result: Optional[dict[str, Any]]
    lane: NotRequired[str]  # absent from events written before lanes existed


class StatusRecord(TypedDict):
    """A value of the status table (``GET /status`` and ``/table/status/`` show it as it is).

    A TypedDict rather than a ``faust.Record`` table value: it stays a plain
    dict at run time, so the JSON already in the status changelog, the
    ``/table/`` views and every reader keep working unchanged, and a field
    added later cannot make recovery of an older changelog fail to decode.
    ``state`` and ``stage`` read back from the changelog as plain strings.
    """

    question_id: str
    state: State
    stage: Stage
    epoch: int
    attempt: int
    retries: int
    version: list[int]    # a Version; a list because that is what JSON gives back
    accepted_at: float
    updated_at: float
    detail: Optional[str]
    result: Optional[dict[str, Any]]
    lane: str             # a Lane: where reconciliation re-enqueues the question


class AttemptCounts(TypedDict):
    """A value of the attempts table."""

    epoch: int
    generations: int
    retries: int


def version(epoch: int, attempt: int, retries: int, stage: Stage | str) -> Version:
    """Order of an event in a question's life."""
    return (epoch, attempt, retries, STAGE_RANK[stage])


def fold_status(current: Optional[StatusRecord], event: StatusEventFields) -> Optional[StatusRecord]:
    """The status record after ``event``, or ``None`` when the event is stale.

    ``event`` is a status event as a mapping (``StatusEvent.asdict()``).
    The record keeps the acceptance time and the last result so that a
    completed question still answers with its answer.  A cancellation and
    what follows it in its epoch are folded as the module docstring says.
    """
    new_version = version(event["epoch"], event["attempt"], event["retries"], event["stage"])
    cancelled_here = current is not None and current["state"] == State.CANCELLED and current["epoch"] == event["epoch"]
    if event["stage"] == Stage.CANCELLED:
        if current is not None and (current["epoch"] > event["epoch"] or (
                current["epoch"] == event["epoch"] and current["state"] in (State.COMPLETED, State.CANCELLED))):
            return None
        if current is not None and current["epoch"] == event["epoch"]:
            # The canceller does not know the attempt: keep the one the question reached.
            new_version = version(event["epoch"], current["attempt"], current["retries"], Stage.CANCELLED)
    elif cancelled_here:
        if event["stage"] != Stage.COMPLETED:
            return None
    elif current is not None and tuple(current["version"]) > new_version:
        return None
    attempt, retries = new_version[1], new_version[2]
    record: StatusRecord = {
        "question_id": event["question_id"],
        "state": STAGE_STATE[event["stage"]],
        "stage": event["stage"],
        "epoch": event["epoch"],
        "attempt": attempt,
        "retries": retries,
        "version": list(new_version),
        "accepted_at": event["accepted_at"],
        "updated_at": event["at"],
        "detail": event.get("detail"),
        "result": event.get("result"),
        "lane": lane_of(event.get("lane")),
    }
    if current is not None and tuple(current["version"]) == new_version and current == record:
        return None  # exact redelivery: nothing to write
    return record


def fold_attempts(current: Optional[AttemptCounts], event: StatusEventFields) -> Optional[AttemptCounts]:
    """The attempt counts after ``event``, or ``None`` when nothing changes.

    ``generations`` counts LLM generations that produced an answer and
    ``retries`` counts error retries; both are set from the values the event
    carries, never incremented, so a redelivered event cannot double them.
    """
    stage = event["stage"]
    if stage == Stage.CANCELLED:
        return None  # a cancellation generates nothing and carries no attempt of its own
    generations = event["attempt"] if STAGE_RANK[stage] >= STAGE_RANK[Stage.SCORING] else event["attempt"] - 1
    if stage == Stage.FAILED:
        generations = event["attempt"] - 1
    record: AttemptCounts = {"epoch": event["epoch"], "generations": generations, "retries": event["retries"]}
    if current is not None:
        if (current["epoch"], current["generations"], current["retries"]) >= (
                record["epoch"], record["generations"], record["retries"]):
            return None
    return record


def is_stale(current: Optional[StatusRecord], epoch: int, attempt: int, retries: int, stage: Stage | str) -> bool:
    """True when the question's recorded progress is already past this work.

    A stage calls this before doing expensive work (an LLM call) for a
    redelivered message: if the recorded status is beyond ``stage`` of the
    same attempt, that work already finished and must not run again.
    """
    if current is None:
        return False
    return tuple(current["version"]) > version(epoch, attempt, retries, stage)


def is_cancelled(current: Optional[StatusRecord], epoch: int) -> bool:
    """True when the question was cancelled in ``epoch``: no LLM call may start for it in that epoch.

    Separate from :func:`is_stale` because a cancellation ends every attempt
    and retry of its epoch, not only the ones its version is ahead of.
    """
    return current is not None and current["state"] == State.CANCELLED and current["epoch"] == epoch


def due_to_expire(record: StatusRecord, now: float, retention: float) -> bool:
    """True when a finished question has not moved for ``retention`` seconds (0 keeps every question).

    Only terminal records expire: what is in flight stays, so the tables
    hold what is in flight plus what finished within the retention.
    """
    return retention > 0 and record["state"] in TERMINAL and record["updated_at"] <= now - retention


def expires(current: Optional[StatusRecord], event: StatusEventFields) -> bool:
    """True when expiry ``event`` removes ``current`` from the tables.

    Only the record the timer saw goes: a question resubmitted since (a new
    epoch) or moved on has another version and stays.  A redelivered expiry
    finds nothing (or a newer record) and does nothing.
    """
    if current is None or event["stage"] != EXPIRE or not event.get("result"):
        return False
    seen = (event["result"] or {}).get("version")
    return current["state"] in TERMINAL and seen is not None and list(current["version"]) == list(seen)
