"""Reconciliation: re-enqueue accepted questions that nothing will move any more.

The database is the store of record: every non-terminal question is
``pending`` there.  Every ``reconcile_interval_seconds`` a worker looks at
the pending questions whose key it owns (the partition of the events topic,
which is the status table's, so exactly one worker acts on each) and
re-enqueues, in a new epoch and on the lane its status records, those that
are stranded:

* the status table knows nothing of the question ``reconcile_after_seconds``
  after its acceptance, although this worker has read its events partition
  to the end: its first messages were lost (the broker restarted empty, or
  the status table was rebuilt from a changelog that was lost).  While the
  partition lags (a worker starting on a long events log, a slow ``track``)
  the question's ``queued`` event may simply not be applied yet, so nothing
  is judged unknown there until it has caught up;
* its status has not moved past its stage's deadline
  (:func:`qastream.policy.deadlines.overdue`): the message it waits on was lost
  after its status event was written;
* its status predates the moment this worker found that the broker had lost
  its topics (:func:`check_topics`): every message written before is gone.

The new epoch (:func:`qastream.db.queries.resubmit`) makes every message of
the old one stale, so a late original is skipped, never answered twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Optional

from qastream.app import app, llm, settings, storage, topics
from qastream.policy.breaker import CLOSED
from qastream.policy.deadlines import Deadlines, backlog_held, overdue, stage_deadlines
from qastream.policy.lanes import PRIORITY, Lane, lane_of
from qastream.policy.lifecycle import State
from qastream.streaming.requeue import enqueue
from qastream.streaming.routing import partition_of
from qastream.streaming.timers import survives_failures
from qastream.streaming.topic_admin import repair_topics
from qastream.tables.status import status_table

logger = logging.getLogger(__name__)

deadlines = stage_deadlines(settings)

#: Stage name under which questions the status table never heard of are counted.
UNKNOWN = "unknown"


def stranded(candidates: Mapping[str, Optional[Mapping[str, Any]]], unknown_ids: set[str], now: float,
             limits: Deadlines, line_held: bool, topics_lost_at: float = 0.0) -> dict[str, str]:
    """Question id -> last stage of the candidates to re-enqueue.

    ``candidates`` maps this worker's pending questions to their status
    record; ``unknown_ids`` are those accepted long enough ago to count as
    lost when the status table does not know them.
    """
    out = {}
    for qid, record in candidates.items():
        if record is None:
            if qid in unknown_ids:
                out[qid] = UNKNOWN
        elif overdue(record, now, limits, line_held=line_held, topics_lost_at=topics_lost_at):
            out[qid] = record["stage"]
    return out


def caught_up(read: Optional[int], highwater: Optional[int]) -> bool:
    """True when a consumer that last read offset ``read`` has read a partition whose log ends at ``highwater``.

    ``None`` for ``highwater`` (no fetch answered yet) cannot tell, so it is not caught up.
    """
    if highwater is None:
        return False
    return (read + 1 if read is not None else 0) >= highwater


async def events_applied(ids: set[str]) -> set[str]:
    """The ids whose events partition this worker has read to its end (so the status table has all they sent)."""
    consumer = app.consumer
    events = topics.events.get_topic_name()
    # Faust keeps the read offsets on the consumer with no public accessor (as rewind_past_log_end reads them).
    read = dict(getattr(consumer, "_read_offset", {}))
    done: dict[int, bool] = {}
    for tp in consumer.assignment():
        if tp.topic == events:
            done[tp.partition] = caught_up(read.get(tp), cached_highwater(consumer, tp))
    return {qid for qid in ids if done.get(await partition_of(events, qid), False)}


def lanes_of(records: Mapping[str, Optional[Mapping[str, Any]]], batched: frozenset[str] = frozenset()) -> dict[str, Lane]:
    """Question id -> the lane its status record names: a stranded question is re-enqueued on its own lane.

    A question the status table never heard of (no record, or one written
    before lanes existed) goes to the bulk lane when a batch asked it
    (``batched``, from the database) and to the interactive lane otherwise.
    """
    def lane(qid: str, record: Optional[Mapping[str, Any]]) -> Lane:
        named = (record or {}).get("lane")
        if named is None:
            return Lane.BULK if qid in batched else Lane.INTERACTIVE
        return lane_of(named)
    return {qid: lane(qid, record) for qid, record in records.items()}


def without_lane(records: Mapping[str, Optional[Mapping[str, Any]]]) -> list[str]:
    """The questions whose status record names no lane (or that have none)."""
    return [qid for qid, record in records.items() if (record or {}).get("lane") is None]


async def owned(ids: list[str]) -> list[str]:
    """The ids whose status partition this worker actively owns."""
    events = topics.events.get_topic_name()
    active = {tp.partition for tp in app.consumer.assignment() if tp.topic == events}
    return [qid for qid in ids if await partition_of(events, qid) in active]


@app.timer(settings.reconcile_interval_seconds)
@survives_failures
async def reconcile() -> None:
    """Re-enqueue this worker's pending questions that are stranded (lost or past their stage deadline).

    A failure (database or broker unreachable) is logged and the next round
    tries again: a question taken but not sent keeps its old status, so it
    is overdue again next time and gets one more epoch.
    """
    if app.rebalancing:
        return
    try:
        await requeue_stranded(time.time())
    except Exception:
        logger.exception("reconciliation failed; retrying in %.0f s", settings.reconcile_interval_seconds)


def line_held() -> bool:
    """Questions waiting for a generation slot wait on purpose: the LLM is out (no server's breaker is closed), or
    a backlog is ahead of them."""
    return llm.breaker_state() != CLOSED or backlog_held(
        app.runtime.consumer_lag, [topics.intake(lane).get_topic_name() for lane in PRIORITY],
        app.runtime.llm_slots.slots)


async def requeue_stranded(now: float) -> int:
    """One reconciliation round; returns how many questions were re-enqueued."""
    lost_at = app.runtime.topics_lost_at
    earliest = min(settings.reconcile_after_seconds, deadlines.shortest())
    candidates = await owned(await storage.pending_before(max(now - earliest, lost_at)))
    if not candidates:
        return 0
    unknown_ids = await events_applied(
        set(await storage.pending_before(max(now - settings.reconcile_after_seconds, lost_at))))
    records = {qid: status_table.get(qid) for qid in candidates}
    stages = stranded(records, unknown_ids, now, deadlines, line_held=line_held(), topics_lost_at=lost_at)
    if not stages:
        return 0
    taken = await storage.resubmit(now, statuses=[State.PENDING], question_ids=list(stages))
    for acceptance in taken:
        logger.warning("%s: stranded in stage %s; re-enqueued in epoch %d", acceptance.question_id,
                       stages[acceptance.question_id], acceptance.epoch)
    stranded_records = {qid: records[qid] for qid in stages}
    unnamed = without_lane(stranded_records)
    batched = frozenset(await storage.batched(unnamed)) if unnamed else frozenset()
    count = await enqueue(taken, lanes_of(stranded_records, batched))
    for acceptance in taken:
        app.runtime.counts.record_stalled(stages[acceptance.question_id])
    logger.warning("reconciliation re-enqueued %d stranded question(s)", count)
    return count


def repair_layout() -> dict[str, int]:
    """Every topic the worker needs with its partition count: the graph's, the tables' changelogs, and
    Faust's leader-election topic (one partition, named by Faust's LeaderAssignor)."""
    changelogs = {table.changelog_topic.get_topic_name(): table.partitions for table in app.tables.values()}
    return {**app.topic_layout, **changelogs, f"{app.conf.id}-__assignor-__leader": 1}


def past_log_end(committed: Optional[int], read: Optional[int], highwater: Optional[int]) -> bool:
    """True when the consumer's position in a partition lies beyond its log end offset.

    ``committed`` (next offset to read) and ``read`` (last offset read) must
    be taken before ``highwater``, which only grows, so this cannot happen on
    a live log.  It happens when the topic was re-created under the consumer
    (the broker restarted empty) and an old offset was committed on the new
    topic: Tansu then serves nothing until the log grows past it (Kafka would
    answer OFFSET_OUT_OF_RANGE and the consumer would reset itself).
    """
    if highwater is None:
        return False
    return (committed is not None and committed > highwater) or (read is not None and read + 1 > highwater)


def cached_highwater(consumer: Any, tp: Any) -> Optional[int]:
    """The log end offset of ``tp`` from the consumer's last fetch, ``None`` before any."""
    try:
        return consumer.highwater(tp)
    except Exception:
        return None


async def rewind_past_log_end() -> None:
    """Seek this worker's partitions of the graph's topics that lie past their log end back to the start."""
    consumer = app.consumer
    tps = [tp for tp in consumer.assignment() if tp.topic in app.topic_layout]
    if not tps:
        return
    # Faust keeps these on the consumer with no public accessor (as qastream.telemetry.lag reads them).
    committed = dict(getattr(consumer, "_committed_offset", {}))
    read = dict(getattr(consumer, "_read_offset", {}))
    # The log end the last fetch reported, not a ListOffsets request: that one
    # queues on the consumer thread behind (and ahead of) the rebalance and
    # table recovery, and can wait there for minutes on a topic being re-created.
    highwaters = {tp: cached_highwater(consumer, tp) for tp in tps}
    for tp in tps:
        if past_log_end(committed.get(tp), read.get(tp), highwaters.get(tp)):
            logger.warning("%s[%d]: position %s is past the log end %s (the topic was re-created): reading it "
                           "from the start", tp.topic, tp.partition, committed.get(tp), highwaters.get(tp))
            await consumer.seek(tp, 0)
            # Faust commits only offsets above the one it last committed: forget the stale one.
            consumer._committed_offset[tp] = None  # type: ignore[attr-defined]


async def check_topics() -> None:
    """Re-create topics the broker lost (it restarted empty) and have reconciliation take over.

    Found lost, every message written before is gone: reconciliation
    re-enqueues every pending question whose status is older at its next
    round, instead of waiting out each stage's deadline.  On the development
    broker, a position left past the end of a re-created topic is rewound.
    """
    try:
        lost = await repair_topics(";".join(str(url) for url in app.conf.broker), repair_layout(),
                                   replace_mismatched=settings.broker_profile == "development")
        if lost:
            app.runtime.topics_lost_at = time.time()
            logger.warning("the broker lost %d topic(s): re-created them; pending questions written before "
                           "are re-enqueued at the next reconciliation", len(lost))
        if settings.broker_profile == "development" and not app.rebalancing and not app.in_recovery:
            await rewind_past_log_end()
    except Exception as exc:  # the broker is down: nothing to repair yet
        logger.info("topic check failed: %r", exc)


if settings.check_topics_interval_seconds > 0:
    app.timer(settings.check_topics_interval_seconds)(check_topics)
