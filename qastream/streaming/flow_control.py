"""Faust's flow control, except that resuming the streams no longer throws away records nothing will read again.

Faust hands each fetched record to a stream's buffer (a queue) and remembers
the offset of the last one it handed over (``Consumer._read_offset``); a
record fetched again at or below it is dropped as already read.  When a
rebalance ends, recovery seeks the stream partitions to their committed
offsets and *then* resumes the flow, and resuming clears every stream
buffer (``FlowControlEvent.resume``).  A batch fetched before the seek goes
on being handed over meanwhile, so its records are in the buffers when they
are cleared and its last ones have already moved ``_read_offset`` past them:
the re-fetch drops them as read, and nothing delivers them again.  The
cleared messages were also never acked, and while they lived on (the
worker's garbage collector runs rarely) Faust's commit bookkeeping still
counted them as in flight and held the partition's commits back.

That is what failed issue 15's 500-question batch test after a ``kill -9``
in about one run in five: a question or two stranded until reconciliation
gave it a second epoch, or a partition's lag that never drained.

:class:`BufferKeepingFlowControl` changes what a clear does while records
are flowing (the end of recovery): the buffered records of partitions this
worker is still assigned are kept, to be processed as if nothing happened,
and ``_read_offset`` covers them so the re-fetch does not deliver them a
second time.  With the flow stopped (a rebalance starting) it clears as
Faust does: the seek at the end of the rebalance reads everything again.
Whatever it does drop is forgotten by the commit bookkeeping.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

from faust.exceptions import ConsumerNotStarted
from faust.types import TP, Message
from mode.utils.queues import FlowControlEvent

logger = logging.getLogger(__name__)


def message_of(item: Any) -> Optional[Message]:
    """The consumer message behind a stream buffer's item (an event), if it has one."""
    return getattr(item, "message", None)


def keeps(message: Optional[Message], consumer: Any, assigned: Iterable[TP]) -> bool:
    """Whether a buffered record survives a clear while the flow is active: a stream partition still ours."""
    return message is not None and message.tp in assigned and not consumer._is_changelog_tp(message.tp)


def assignment(consumer: Any) -> frozenset[TP]:
    """The consumer's partitions; none before its thread has started (nothing was fetched then)."""
    try:
        return frozenset(consumer.assignment())
    except ConsumerNotStarted:
        return frozenset()


class BufferKeepingFlowControl(FlowControlEvent):
    """Faust's flow control for ``app``, keeping buffered records of assigned partitions when it clears with the flow on."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    def clear(self) -> None:
        consumer = self.app._consumer
        if consumer is None:  # no consumer yet, so nothing fetched
            super().clear()
            return
        assigned = assignment(consumer) if consumer.flow_active else frozenset()
        kept: dict[TP, int] = {}
        dropped = 0
        for queue in list(self._queues):
            items = list(getattr(queue, "_queue", ()))
            queue.clear()
            for item in items:
                message = message_of(item)
                if keeps(message, consumer, assigned):
                    assert message is not None
                    queue._queue.append(item)  # type: ignore[attr-defined]  # the deque of asyncio.Queue
                    kept[message.tp] = max(message.offset, kept.get(message.tp, message.offset))
                elif message is not None:
                    consumer._unacked_messages.discard(message)  # never acked now: must not hold commits back
                    dropped += 1
        for tp, offset in kept.items():
            read = consumer._read_offset.get(tp)
            consumer._read_offset[tp] = offset if read is None else max(read, offset)
        if kept or dropped:
            logger.info("stream buffers cleared: kept records of %d partition(s), dropped %d record(s)",
                         len(kept), dropped)
