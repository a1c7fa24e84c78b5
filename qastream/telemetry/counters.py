"""What this worker's stages did, counted in process.

The database holds the totals of the whole deployment (``GET /metrics``
reads them there); these counters hold what *this* worker did since it
started, which is what Prometheus wants: per-process counters and histograms
that it sums across workers itself.  Stages call the ``record_*`` methods
of ``app.runtime.counts`` after the work is done (after the database write), so a redelivered message
that turned out stale is not counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from qastream.db.stats import SCORE_BUCKETS
from qastream.telemetry.distribution import Distribution


@dataclass
class WorkerCounts:
    """Stage counters and distributions of one worker (held by :class:`qastream.runtime.Runtime`)."""

    #: Acceptance-to-storage time of the answers this worker stored, in ms.
    question_ms: Distribution = field(default_factory=Distribution)
    #: BERTScore F1 of the answers this worker stored (scored ones only).
    answer_scores: Distribution = field(default_factory=lambda: Distribution(buckets=(*SCORE_BUCKETS, 1.0)))
    #: Terminal outcomes this worker recorded: completed, low_quality (also completed), failed.
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Dead letters this worker recorded, by error class.
    dead_letters: Counter[str] = field(default_factory=Counter)
    #: Retries this worker parked, by error class (``outage`` when the circuit breaker was open).
    retries: Counter[str] = field(default_factory=Counter)
    #: Questions dead-lettered because their retry budget ran out, by error class.
    retries_exhausted: Counter[str] = field(default_factory=Counter)
    #: Stranded questions reconciliation re-enqueued in a new epoch, by the stage they were stuck in.
    stalled_requeued: Counter[str] = field(default_factory=Counter)

    def record_completed(self, total_ms: float, score: Optional[float], low_quality: bool) -> None:
        """An answer was stored."""
        self.outcomes["completed"] += 1
        if low_quality:
            self.outcomes["low_quality"] += 1
        self.question_ms.observe(total_ms)
        if score is not None:
            self.answer_scores.observe(score)

    def record_failed(self, error_class: str) -> None:
        """A question was stored as failed (dead letter)."""
        self.outcomes["failed"] += 1
        self.dead_letters[error_class] += 1

    def record_retry(self, error_class: str, outage: bool) -> None:
        """A failed call was parked for a retry."""
        self.retries["outage" if outage else error_class] += 1

    def record_exhausted(self, error_class: str) -> None:
        """A question ran out of retries and goes to the dead letters."""
        self.retries_exhausted[error_class] += 1

    def record_stalled(self, stage: str) -> None:
        """Reconciliation re-enqueued a question stranded in ``stage`` (``unknown``: no status at all)."""
        self.stalled_requeued[stage] += 1

    def snapshot(self) -> dict:
        """The counters as JSON."""
        return {
            "outcomes": dict(self.outcomes), "dead_letters_by_class": dict(self.dead_letters),
            "retries_by_class": dict(self.retries), "retries_exhausted_by_class": dict(self.retries_exhausted),
            "stalled_requeued_by_stage": dict(self.stalled_requeued),
            "question_latency_ms": self.question_ms.percentiles(),
        }
