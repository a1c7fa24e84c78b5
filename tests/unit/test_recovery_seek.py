"""The seek that ends a rebalance skips no record and hands none over out of order (issue 15)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from mode.utils.queues import FlowControlQueue

from qastream.app import app
from qastream.streaming import recovery_seek
from qastream.streaming.recovery_seek import SeekFenceFlowControl, fence_of, release

BULK0 = TP("questions-bulk", 0)
BULK1 = TP("questions-bulk", 1)
CHANGELOG = TP("status-changelog", 0)


class FakeConsumer:
    """The parts of Faust's consumer the fence uses, with one fetched batch of ``records``."""

    def __init__(self, records: dict[TP, list[int]] | None = None, flow_active: bool = True) -> None:
        self.records = {tp: [SimpleNamespace(offset=o) for o in offsets] for tp, offsets in (records or {}).items()}
        self.active = {BULK0, BULK1, CHANGELOG}
        self.flow_active = flow_active
        self.should_stop = False
        self._buffered_partitions: set[TP] = set()
        self._unacked_messages: set[int] = set()
        self.scheduler = SimpleNamespace(iterate=round_robin)
        self.app = SimpleNamespace(consumer_generation_id=1,
                                   monitor=SimpleNamespace(track_tp_end_offset=lambda tp, hw: None))
        self.log = SimpleNamespace(dev=lambda *a: None, warning=lambda *a: None)
        self.sought = 0

    async def _wait_next_records(self, timeout: float) -> tuple[dict[TP, list[Any]], set[TP]]:
        return self.records, self.active

    def _get_active_partitions(self) -> set[TP]:
        return self.active

    def pause_partitions(self, tps: set[TP]) -> None:
        self.active -= tps

    def resume_partitions(self, tps: set[TP]) -> None:
        self.active |= tps

    def assignment(self) -> set[TP]:
        return {BULK0, BULK1, CHANGELOG}

    @staticmethod
    def _is_changelog_tp(tp: TP) -> bool:
        return tp.topic.endswith("changelog")

    def highwater(self, tp: TP) -> int:
        return 1000

    @staticmethod
    def _to_message(tp: TP, record: Any) -> tuple[TP, int]:
        return tp, record.offset


def round_robin(records: dict[TP, list[Any]]) -> Any:
    iterators = {tp: iter(batch) for tp, batch in records.items()}
    while iterators:
        for tp in list(iterators):
            try:
                yield tp, next(iterators[tp])
            except StopIteration:
                del iterators[tp]


async def handed_over(getmany: Any, consumer: FakeConsumer, after: int, meanwhile: Any) -> list[tuple[TP, int]]:
    """What ``getmany`` hands over; ``meanwhile(consumer)`` runs once ``after`` records were handed over."""
    out = []
    async for _tp, message in getmany(consumer, 1.0):
        out.append(message)
        if len(out) == after:
            meanwhile(consumer)
    return out


def seek_and_release(consumer: FakeConsumer) -> None:
    """A seek of BULK0 that began and was released while the batch was being handed over."""
    fence_of(consumer).moves.update([BULK0, BULK0])


def test_a_batch_returned_before_a_seek_hands_over_none_of_the_sought_partition_after_it():
    """Its records are of the old position: handed over after the seek they jump the read offset forward."""
    consumer = FakeConsumer({BULK0: [24, 25, 26, 27], BULK1: [14, 15, 16]})
    assert asyncio.run(handed_over(recovery_seek.getmany, consumer, 2, seek_and_release)) == [
        (BULK0, 24), (BULK1, 14), (BULK1, 15), (BULK1, 16)]


def test_faust_own_getmany_hands_over_the_old_batch_after_a_seek():
    """Documents the bug the fence is for."""
    consumer = FakeConsumer({BULK0: [24, 25, 26, 27]})
    assert len(asyncio.run(handed_over(recovery_seek.original_getmany, consumer, 1, seek_and_release))) == 4


def test_a_batch_returned_after_the_release_is_handed_over_whole():
    consumer = FakeConsumer({BULK0: [24, 25]})
    seek_and_release(consumer)
    assert asyncio.run(handed_over(recovery_seek.getmany, consumer, 0, lambda c: None)) == [(BULK0, 24), (BULK0, 25)]


def test_the_seek_holds_the_stream_partitions_paused_until_the_buffers_are_cleared(monkeypatch):
    """Records of the new position handed over before the clear would be cleared, and never come again."""
    consumer = FakeConsumer()
    seen = []

    async def original(self: Any) -> None:
        seen.append(set(self.active))

    monkeypatch.setattr(recovery_seek, "original_perform_seek", original)
    monkeypatch.setattr(recovery_seek, "HOLD_SECONDS", 60.0)
    flow = SeekFenceFlowControl(SimpleNamespace(_consumer=consumer))

    async def run() -> None:
        await recovery_seek.perform_seek(consumer)
        assert consumer.active == {CHANGELOG}   # still held after the seek
        flow.resume()                            # Faust clears the buffers as the flow resumes

    asyncio.run(run())
    assert seen == [{CHANGELOG}]  # paused while seeking; changelogs are table recovery's
    assert consumer.active == {BULK0, BULK1, CHANGELOG} and not fence_of(consumer).held


def test_without_a_clear_the_hold_ends_after_a_while(monkeypatch):
    consumer = FakeConsumer()

    async def original(self: Any) -> None:
        return None

    monkeypatch.setattr(recovery_seek, "original_perform_seek", original)
    monkeypatch.setattr(recovery_seek, "HOLD_SECONDS", 0.01)

    async def run() -> None:
        await recovery_seek.perform_seek(consumer)
        await asyncio.sleep(0.1)

    asyncio.run(run())
    assert consumer.active == {BULK0, BULK1, CHANGELOG}


def test_a_late_release_leaves_the_hold_of_a_newer_seek():
    consumer = FakeConsumer()
    consumer.pause_partitions({BULK0})
    fence_of(consumer).held[BULK0] = 2
    release(consumer, 1)
    assert BULK0 not in consumer.active
    release(consumer, 2)
    assert BULK0 in consumer.active


def test_with_the_flow_stopped_nothing_is_released():
    """A rebalance is under way: it resumes the partitions when it ends."""
    consumer = FakeConsumer(flow_active=False)
    consumer.pause_partitions({BULK0})
    fence_of(consumer).held[BULK0] = 1
    release(consumer)
    assert BULK0 not in consumer.active and fence_of(consumer).held == {BULK0: 1}


class Unacked(set):
    """Faust's weak set of unacked messages, by id (the stand-in messages are not hashable)."""

    def discard(self, message: Any) -> None:
        super().discard(id(message))


def test_a_clear_forgets_the_messages_it_drops():
    """Never acked now, they must not hold the partition's commits back."""
    consumer = FakeConsumer()
    consumer._unacked_messages = Unacked()
    flow = SeekFenceFlowControl(SimpleNamespace(_consumer=consumer))
    queue: FlowControlQueue = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    dropped = SimpleNamespace(message=SimpleNamespace(tp=BULK0, offset=44))
    queue.put_nowait(dropped)
    consumer._unacked_messages.update({id(dropped.message), 7})
    flow.clear()
    assert queue.empty() and consumer._unacked_messages == {7}


def test_install_replaces_faust_methods():
    recovery_seek.install()
    assert (Consumer.perform_seek, Consumer.getmany, AIOKafkaConsumerThread._fetch_records) == (
        recovery_seek.perform_seek, recovery_seek.getmany, recovery_seek.fetch_records)


def test_the_app_uses_the_fence_flow_control():
    assert isinstance(app.flow_control, SeekFenceFlowControl)


def drained(partitions: Any, buffered: list[TP]) -> list[TP]:
    """The partitions aiokafka's ``Fetcher.fetched_records`` hands records of, by its own test."""
    return [tp for tp in buffered if not (partitions and tp not in partitions)]


def test_a_fetch_with_every_partition_paused_returns_none_of_them():
    """aiokafka reads an empty set as every partition: the paused ones' records were fetched and dropped."""
    active: set[TP] = {BULK0}
    live = recovery_seek.LivePartitions(active)
    active.discard(BULK0)  # paused while the fetch waits
    assert drained(live, [BULK0, BULK1]) == []
    assert drained(set(), [BULK0, BULK1]) == [BULK0, BULK1]  # Faust's own set, once empty
    active.add(BULK1)
    assert drained(live, [BULK0, BULK1]) == [BULK1]


def test_the_fetch_reads_faust_active_partitions_live(monkeypatch):
    seen = []

    async def original(self: Any, consumer: Any, partitions: Any, timeout: Any = None, max_records: Any = None) -> dict:
        seen.append(partitions)
        return {}

    monkeypatch.setattr(recovery_seek, "original_fetch_records", original)
    active = {BULK0}
    asyncio.run(recovery_seek.fetch_records(None, None, active, timeout=1.0, max_records=10))
    asyncio.run(recovery_seek.fetch_records(None, None, None))
    assert isinstance(seen[0], recovery_seek.LivePartitions) and seen[0].partitions is active and seen[1] is None
