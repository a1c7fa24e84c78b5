"""Batches: their states, how their counts fold from their questions, and when a batch is finished.

A batch (``POST /batches``) owns no state of its questions: each item points
at a question, and what the batch shows is folded from those questions'
statuses when asked.  The batch's own state only records what no question
knows: that someone cancelled it, and that it ended (once, by a
conditional update, so two workers cannot both end it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Iterable, Optional

from qastream.policy.lifecycle import State


class BatchStatus(StrEnum):
    """Where a batch is, as ``GET /batches/{id}`` shows it."""

    IN_PROGRESS = "in_progress"
    #: Cancelled while some of its questions were being generated: those finish first.
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


#: States a batch leaves no more; reaching one calls the end-of-batch hook.
FINISHED = frozenset({BatchStatus.COMPLETED, BatchStatus.CANCELLED})

#: Each unfinished state and the state it ends in once every item is terminal.
ENDS_AS: dict[str, BatchStatus] = {
    BatchStatus.IN_PROGRESS: BatchStatus.COMPLETED,
    BatchStatus.CANCELLING: BatchStatus.CANCELLED,
}


@dataclass(frozen=True)
class RequestCounts:
    """A batch's items by outcome.

    ``completed + failed + cancelled`` never exceed ``total``; the rest are in
    flight.  ``low_quality`` counts the completed items whose kept answer is
    below the quality threshold (a subset of ``completed``, as in ``/metrics``).
    """

    total: int = 0
    completed: int = 0
    low_quality: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def finished(self) -> int:
        """Items in a terminal state."""
        return self.completed + self.failed + self.cancelled

    @property
    def done(self) -> bool:
        """Every item is terminal."""
        return self.finished >= self.total

    def as_json(self) -> dict[str, int]:
        return asdict(self)


def fold_counts(total: int, items: Iterable[tuple[Optional[str], Optional[bool]]]) -> RequestCounts:
    """The counts of a batch of ``total`` items from (question status, low-quality flag) per item.

    A question with no row (``None``) is still in flight, as is every
    non-terminal status.
    """
    completed = low_quality = failed = cancelled = 0
    for status, low in items:
        if status == State.COMPLETED:
            completed += 1
            low_quality += 1 if low else 0
        elif status == State.FAILED:
            failed += 1
        elif status == State.CANCELLED:
            cancelled += 1
    return RequestCounts(total, completed, low_quality, failed, cancelled)


def next_status(current: str, counts: RequestCounts, *, now: float = 0.0, cancelled_at: Optional[float] = None,
                grace: float = 0.0) -> Optional[BatchStatus]:
    """The state a batch moves to now, or ``None`` when it stays where it is.

    A cancel marks every question not answered yet ``cancelled`` at once,
    including the few whose LLM call is in flight (the database does not
    know which those are); their answers replace the cancel when stored.  So
    a cancelling batch ends only ``grace`` seconds after its cancel, once
    those calls had time to finish, and its counts are final when it ends.
    """
    if current in FINISHED or not counts.done:
        return None
    if current == BatchStatus.CANCELLING and cancelled_at is not None and now < cancelled_at + grace:
        return None
    return ENDS_AS[current]


def after_cancel(current: str) -> Optional[BatchStatus]:
    """The state a cancel request moves a batch to, or ``None`` when it changes nothing (idempotent).

    A finished batch stays finished; the timer then ends a cancelling batch
    as ``cancelled`` when its last in-flight question is terminal.
    """
    return BatchStatus.CANCELLING if current == BatchStatus.IN_PROGRESS else None
