"""Stage deadlines: how long a question may stay in one stage before it counts as stranded.

Delivery is at-least-once, but a message can still be lost for good: a send
that failed after its status event was written, a batch a stage dropped, a
broker that restarted empty.  The status table then shows the question in a
stage whose work will never report back.  Every non-terminal stage therefore
has a deadline (DESIGN §3, invariant 9); reconciliation
(:mod:`qastream.agents.reconcile`) re-enqueues a question whose status has
not moved for longer, in a new epoch, so whatever is left of the old one is
skipped as stale.

Each deadline is the longest the stage's own work can legitimately take,
derived from the settings that bound that work, plus a margin for the broker
hand-off between stages.  Pure functions, table-tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from qastream.policy.lifecycle import STAGE_STATE, TERMINAL, Stage
from qastream.settings import Settings

#: Scoring time budgeted per answer.  BERTScore on the packaged model scores
#: 17-30 pairs/s (DESIGN §6); 4 pairs/s leaves room for a busy CPU.
SCORING_SECONDS_PER_PAIR = 0.25


@dataclass(frozen=True)
class Deadlines:
    """Seconds a question may stay in each non-terminal stage with no status change."""

    queued: float          # in questions-pending, waiting for a generation slot
    generating: float      # one LLM call, bounded by the client time-out
    scoring: float         # in a scoring batch, retried once alone, then on to the store
    regenerating: float    # the next attempt waiting in questions-pending
    waiting_retry: float   # parked for the longest retry delay, then waiting for a slot

    def of(self, stage: Stage | str) -> Optional[float]:
        """The deadline of ``stage``; ``None`` for the terminal stages, which have none."""
        if STAGE_STATE[stage] in TERMINAL:
            return None
        return float(getattr(self, stage))

    def shortest(self) -> float:
        """The shortest deadline: no question accepted more recently can be overdue."""
        return min(self.queued, self.generating, self.scoring, self.regenerating, self.waiting_retry)


def stage_deadlines(settings: Settings) -> Deadlines:
    """Every stage's deadline from the settings that bound its work.

    ``QASTREAM_DEADLINE_QUEUED_SECONDS`` > 0 overrides the derived wait for a
    generation slot: with a backlog longer than one LLM time-out, questions
    behind it would otherwise be re-enqueued behind it again (harmless, the old
    message is skipped without an LLM call, but counted as stalled).
    """
    margin = settings.deadline_margin_seconds
    queued = settings.deadline_queued_seconds or settings.llm_timeout_seconds + margin
    generating = settings.llm_timeout_seconds + margin
    # A batch, and on failure each of its answers alone once more (qastream.agents.validate).
    scoring = 2 * settings.scorer_batch_size * SCORING_SECONDS_PER_PAIR + margin
    longest_delay = max((*settings.overload_delays(), settings.retry_quota_delay_seconds,
                         settings.breaker_max_cooldown_seconds))
    return Deadlines(queued=queued, generating=generating, scoring=scoring, regenerating=queued,
                     waiting_retry=longest_delay + settings.retry_release_interval + queued)


def backlog_held(consumer_lag: Optional[Mapping[str, Any]], intake_topics: Iterable[str], in_flight: int) -> bool:
    """True when this worker's partitions of the lanes' topics hold more messages than its LLM calls can have
    in flight.

    A question queued behind a backlog is waiting its turn, not stranded:
    re-enqueueing it in a new epoch would put one more copy behind the same
    backlog each deadline, and a long backlog (thousands of questions in
    front of a slow LLM) would multiply its own messages.  ``consumer_lag``
    is the last reading of the lag timer (committed offsets, so up to
    ``in_flight`` messages being generated are not a backlog).  A lost
    message is still found, once the backlog has drained.  Both lanes count:
    the slots are shared, so a bulk backlog holds interactive questions back
    (only for one call each) and an interactive one holds every bulk question.
    """
    if not consumer_lag:
        return False
    by_topic = consumer_lag.get("topics") or {}
    lag = sum(by_topic.get(topic, {}).get("lag") or 0 for topic in intake_topics)
    return lag > 2 * in_flight


#: Stages that wait for a free generation slot; while the circuit breaker holds the line they wait on purpose.
WAITING_FOR_SLOT = frozenset({Stage.QUEUED, Stage.REGENERATING, Stage.WAITING_RETRY})


def overdue(record: Mapping[str, Any], now: float, deadlines: Deadlines, *, line_held: bool = False,
            topics_lost_at: float = 0.0) -> bool:
    """True when a question the database holds as pending has sat in its stage past the deadline.

    A status written before ``topics_lost_at`` (when this worker found that
    the broker had lost its topics) waits on a message that went with them:
    overdue at once, whatever its stage.

    ``record`` is its status-table entry.  A terminal status for a question
    the database holds as pending means a newer epoch (a replay) whose first
    messages never arrived: it gets the ``queued`` deadline.  While the LLM
    circuit breaker is open (``line_held``) questions waiting for a slot are
    held on purpose, not stranded: re-enqueueing them would only pile up
    copies behind the outage.
    """
    stage = record["stage"]
    if record["updated_at"] < topics_lost_at:
        return True
    if line_held and stage in WAITING_FOR_SLOT:
        return False
    deadline = deadlines.of(stage)
    if deadline is None:
        deadline = deadlines.queued
    return now - record["updated_at"] > deadline
