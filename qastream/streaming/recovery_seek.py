"""Faust fixes around the seek that ends a rebalance: no record skipped, none handed over out of order.

Faust hands fetched records to the streams in order and remembers the offset
of the last one per partition (``Consumer._read_offset``); a record fetched
again at or below it is dropped as already read, and a record further on than
the next one is taken for a hole in the log (a "gap", counted as processed
when offsets are committed).  When a rebalance's recovery ends, Faust resumes
the stream partitions, then seeks them to their committed offsets
(``perform_seek``, which sets ``_read_offset`` back), then resumes the flow,
which clears every stream buffer.  After a ``kill -9`` of a worker with a
backlog, issue 15's 500-question batch test caught each way this goes wrong:

* a batch fetched before the seek went on being handed over after it: its
  records jumped ``_read_offset`` forward (a gap over records never handed
  over, committed past), and the re-fetch dropped what the seek meant to
  re-read; a question stranded until reconciliation gave it a second epoch;
* records of a batch Faust dropped because their partition was paused had
  moved the fetch position past them, so a batch handed over during the seek
  started further on than the committed offset;
* records handed over after the seek and cleared from the buffers when the
  flow resumed were never delivered again, and the cleared messages, never
  acked, could hold the partition's commits back while they lived;
* with every partition paused, aiokafka fetched them all (:class:`LivePartitions`).

The fence: :func:`perform_seek` pauses the stream partitions while it seeks
and keeps them paused until the buffers are cleared
(:class:`SeekFenceFlowControl`), so nothing fetched from the new position is
handed over before the clear; :func:`getmany` (Faust 0.15.3's own, plus one
check) stops handing over a partition's records from a batch returned before
a seek of it began, as the position was reset and the re-fetch brings them.
Records handed over before the seek come again (Faust's own behaviour); the
generate stage skips a copy of a question it is still generating, the other
stages are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, AsyncIterator, Optional, Tuple

from faust.exceptions import ConsumerNotStarted
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP, Message
from mode.utils.queues import FlowControlEvent

logger = logging.getLogger(__name__)

#: Faust's own methods: ``perform_seek`` is wrapped, ``getmany`` kept so tests can show the records it hands over.
original_perform_seek = Consumer.perform_seek
original_getmany = Consumer.getmany
original_fetch_records = AIOKafkaConsumerThread._fetch_records
#: Longest the stream partitions stay paused after a seek when no clear of the buffers follows.
HOLD_SECONDS = 1.0


class SeekFence:
    """One consumer's seeks: how many began, the stream partitions they hold paused until a clear."""

    def __init__(self) -> None:
        #: Seeks begun, numbering them.
        self.seeks = 0
        #: Partition -> the number of the seek that holds it paused.
        self.held: dict[TP, int] = {}
        #: Partition -> times it was paused for a seek or released since: a batch returned before a change
        #: holds records of the old position.
        self.moves: Counter[TP] = Counter()


def fence_of(consumer: Any) -> SeekFence:
    """The consumer's :class:`SeekFence`, made on first use."""
    fence = getattr(consumer, "_qastream_seek_fence", None)
    if fence is None:
        fence = consumer._qastream_seek_fence = SeekFence()
    return fence


def stream_partitions(consumer: Any) -> set[TP]:
    """The consumer's active partitions of stream topics (changelogs are positioned by table recovery)."""
    return {tp for tp in consumer._get_active_partitions() if not consumer._is_changelog_tp(tp)}


async def perform_seek(self: Any) -> None:
    """Faust's seek to the committed offsets, with the stream partitions paused until the buffers are cleared."""
    fence = fence_of(self)
    fence.seeks += 1
    seek = fence.seeks
    paused = stream_partitions(self)
    self.pause_partitions(paused)
    fence.held.update(dict.fromkeys(paused, seek))
    fence.moves.update(paused)
    try:
        await original_perform_seek(self)
    finally:
        # The flow control resumes them when it clears the buffers; if no clear comes, this does.
        asyncio.get_running_loop().call_later(HOLD_SECONDS, release, self, seek)


def release(consumer: Any, seek: int | None = None) -> None:
    """Resume the partitions held by seek number ``seek`` (all held ones when ``None``), if records flow.

    With the flow stopped a rebalance is under way: it resumes the partitions itself when it ends.
    """
    fence = fence_of(consumer)
    if not consumer.flow_active:
        return
    held = {tp for tp, by in fence.held.items() if seek is None or by == seek}
    for tp in held:
        del fence.held[tp]
    fence.moves.update(held)
    try:
        assigned = set(consumer.assignment())
    except ConsumerNotStarted:
        return
    if held & assigned:
        consumer.resume_partitions(held & assigned)


async def getmany(self: Any, timeout: float) -> AsyncIterator[Tuple[TP, Message]]:
    """Faust 0.15.3's ``Consumer.getmany``, except that records returned before a seek began are not handed over.

    Faust's comments (why the scheduler goes round-robin over partitions)
    are in its source; the change is the ``fence.moves`` test: a partition
    paused for a seek (or released from it) after the batch was returned has
    its records of the batch skipped.  They are re-fetched: the seek moved the
    position to the committed offset, at or before any record fetched since
    the assignment, and records of the new position are returned only once the
    partition is released.
    """
    fence = fence_of(self)
    records, active_partitions = await self._wait_next_records(timeout)
    moves = fence.moves.copy()
    generation_id = self.app.consumer_generation_id
    if records is None or self.should_stop:
        return
    records_it = self.scheduler.iterate(records)
    to_message = self._to_message
    if self.flow_active:
        for tp, record in records_it:
            if not self.flow_active:
                break
            new_generation_id = self.app.consumer_generation_id
            if new_generation_id != generation_id:
                self.log.dev("Generation id changed from %r to %r. Cancelling getmany.", generation_id,
                             new_generation_id)
                break
            if fence.moves[tp] != moves[tp]:
                continue  # fetched before a seek: the re-fetch from the committed offset hands it over
            if active_partitions is None or tp in active_partitions or tp in self._buffered_partitions:
                highwater_mark = self.highwater(tp)
                self.app.monitor.track_tp_end_offset(tp, highwater_mark)
                yield tp, to_message(tp, record)
    else:
        self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
        try:
            await self.perform_seek()
        except Exception as ex:
            self.log.warning(f"exception performing seek when flow not active {ex}")


class LivePartitions:
    """Faust's live set of active partitions as aiokafka's ``fetched_records`` reads it: never empty.

    Faust passes its own set, so pausing a partition while a fetch waits
    keeps its records out.  But aiokafka treats an empty set as "every
    partition": with the changelogs paused at the end of table recovery and
    the stream partitions paused for the seek, nothing was active, the
    waiting fetch returned the paused partitions' records, Faust dropped them
    (paused), and the fetch position had moved past them: 18 records skipped.
    """

    def __init__(self, partitions: Any) -> None:
        self.partitions = partitions

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self.partitions


async def fetch_records(self: Any, consumer: Any, active_partitions: Any, timeout: Optional[float] = None,
                        max_records: Optional[int] = None) -> Any:
    """Faust's fetch from aiokafka, reading the active partitions through :class:`LivePartitions`."""
    if active_partitions is not None:
        active_partitions = LivePartitions(active_partitions)
    return await original_fetch_records(self, consumer, active_partitions, timeout=timeout, max_records=max_records)


class SeekFenceFlowControl(FlowControlEvent):
    """Faust's flow control for ``app``: a clear forgets the messages it drops and ends the seek's hold."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    def clear(self) -> None:
        consumer = self.app._consumer
        dropped = 0
        if consumer is not None:
            for queue in list(self._queues):
                for item in list(getattr(queue, "_queue", ())):
                    message = getattr(item, "message", None)
                    if message is not None:
                        consumer._unacked_messages.discard(message)  # never acked now: must not hold commits back
                        dropped += 1
        super().clear()
        if consumer is not None:
            if dropped:
                logger.info("stream buffers cleared: %d record(s) dropped, to be read again from the committed "
                            "offsets", dropped)
            release(consumer)


def install() -> None:
    """Replace Faust's methods (idempotent); the app makes its flow control with :class:`SeekFenceFlowControl`."""
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    Consumer.getmany = getmany  # type: ignore[method-assign]
    AIOKafkaConsumerThread._fetch_records = fetch_records  # type: ignore[method-assign]
