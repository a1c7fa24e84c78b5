"""Resuming the streams keeps the buffered records nothing would read again (issue 15's lost questions)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.exceptions import ConsumerNotStarted
from faust.types import TP
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from qastream.app import app
from qastream.streaming.flow_control import BufferKeepingFlowControl

BULK0 = TP("questions-bulk", 0)
BULK1 = TP("questions-bulk", 1)
REVOKED = TP("questions-bulk", 2)
CHANGELOG = TP("status-changelog", 0)


class UnackedIds(set):
    """Faust's weak set of unacked messages, by id (the stand-in messages are not hashable)."""

    def discard(self, message: Any) -> None:
        super().discard(id(message))


class Consumer:
    """What the flow control reads and writes on Faust's consumer."""

    def __init__(self, flow_active: bool) -> None:
        self.flow_active = flow_active
        self._read_offset: dict[TP, Any] = {BULK0: 24, BULK1: None}
        self._unacked_messages = UnackedIds()

    @staticmethod
    def assignment() -> set[TP]:
        return {BULK0, BULK1, CHANGELOG}

    @staticmethod
    def _is_changelog_tp(tp: TP) -> bool:
        return tp.topic.endswith("changelog")


def event(tp: TP, offset: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset))


def buffered(consumer: Consumer, flow: FlowControlEvent, *items: Any) -> FlowControlQueue:
    queue: FlowControlQueue = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    for item in items:
        queue.put_nowait(item)
        consumer._unacked_messages.add(id(item.message))
    return queue


def offsets(queue: FlowControlQueue) -> list[tuple[str, int, int]]:
    return [(item.message.tp.topic, item.message.tp.partition, item.message.offset) for item in queue._queue]  # type: ignore[attr-defined]


def test_resuming_with_records_flowing_keeps_those_of_assigned_stream_partitions():
    """The end of recovery: the seek came first, so a cleared record would never be delivered again."""
    consumer = Consumer(flow_active=True)
    flow = BufferKeepingFlowControl(SimpleNamespace(_consumer=consumer))
    revoked, changelog = event(REVOKED, 3), event(CHANGELOG, 7)
    queue = buffered(consumer, flow, event(BULK0, 44), revoked, event(BULK1, 12), event(BULK1, 13), changelog)
    flow.resume()
    assert offsets(queue) == [("questions-bulk", 0, 44), ("questions-bulk", 1, 12), ("questions-bulk", 1, 13)]
    # The re-fetch from the committed offset must not deliver the kept records a second time...
    assert consumer._read_offset == {BULK0: 44, BULK1: 13}
    # ...and what was dropped will never be acked, so it must not hold commits back.
    assert id(revoked.message) not in consumer._unacked_messages
    assert id(changelog.message) not in consumer._unacked_messages
    assert len(consumer._unacked_messages) == 3


def test_a_read_offset_already_past_the_kept_records_stays():
    consumer = Consumer(flow_active=True)
    consumer._read_offset[BULK0] = 181
    flow = BufferKeepingFlowControl(SimpleNamespace(_consumer=consumer))
    buffered(consumer, flow, event(BULK0, 44))
    flow.clear()
    assert consumer._read_offset[BULK0] == 181


def test_with_the_flow_stopped_everything_is_cleared_as_faust_does():
    """A rebalance is starting: it seeks every partition to its committed offset when it ends."""
    consumer = Consumer(flow_active=False)
    flow = BufferKeepingFlowControl(SimpleNamespace(_consumer=consumer))
    queue = buffered(consumer, flow, event(BULK0, 44), event(BULK1, 12))
    flow.clear()
    assert offsets(queue) == [] and not consumer._unacked_messages
    assert consumer._read_offset == {BULK0: 24, BULK1: None}


def test_faust_own_flow_control_drops_the_records_the_re_fetch_will_skip():
    """Documents the bug: with the read offset already past them, nothing delivers these records again."""
    consumer = Consumer(flow_active=True)
    flow = FlowControlEvent()
    queue = buffered(consumer, flow, event(BULK0, 44))
    flow.resume()
    assert offsets(queue) == []


def test_before_the_consumer_exists_a_clear_is_faust_own():
    flow = BufferKeepingFlowControl(SimpleNamespace(_consumer=None))
    queue: FlowControlQueue = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    queue.put_nowait(object())
    flow.clear()
    assert queue.empty()


def test_a_consumer_whose_thread_has_not_started_has_nothing_to_keep():
    """Faust resumes the flow as the app starts, before the consumer thread runs."""
    consumer = Consumer(flow_active=True)

    def not_started() -> set[TP]:
        raise ConsumerNotStarted("Consumer thread not yet started")

    consumer.assignment = not_started  # type: ignore[method-assign]
    flow = BufferKeepingFlowControl(SimpleNamespace(_consumer=consumer))
    queue = buffered(consumer, flow, event(BULK0, 44))
    flow.resume()
    assert offsets(queue) == []


def test_the_app_streams_use_it():
    assert isinstance(app.flow_control, BufferKeepingFlowControl)
