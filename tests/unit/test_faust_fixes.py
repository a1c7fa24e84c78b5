"""The commit-offset fix for faust-streaming #606, on the consumer's own bookkeeping."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Optional

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from qastream.app import QAStreamApp
from qastream.streaming import faust_fixes

TP0 = TP("questions-pending", 0)


def bookkeeping(acked: list[int], gap: Optional[tuple[int, int]], committed: Optional[int],
                in_flight: tuple[int, ...] = ()) -> SimpleNamespace:
    """The attributes ``_new_offset`` reads, as a restarted consumer has them; ``in_flight`` offsets are
    delivered to a stream and not acked."""
    gaps = defaultdict(IntervalTree)
    if gap is not None:
        gaps[TP0].addi(*gap)
    unacked = [SimpleNamespace(tp=TP0, offset=offset, acked=False) for offset in in_flight]
    return SimpleNamespace(_acked={TP0: list(acked)}, _gap=gaps, _committed_offset={TP0: committed},
                           _acked_index={TP0: set(acked)}, _unacked_messages=unacked)


def test_a_gap_overlapping_acked_offsets_commits_everything_at_once():
    # Offsets 11..20 were processed; the fetcher reported 11..15 as a gap too.
    state = bookkeeping(acked=list(range(11, 21)), gap=(11, 16), committed=10)
    assert faust_fixes.new_offset(state, TP0) == 21
    assert state._acked[TP0] == []


def test_the_unpatched_method_stalls_on_the_same_bookkeeping():
    """Documents the bug the fix is for: without it the commit stops at the first duplicate."""
    state = bookkeeping(acked=list(range(11, 21)), gap=(11, 16), committed=10)
    assert faust_fixes.original_new_offset(state, TP0) < 21


@pytest.mark.parametrize("acked, gap, committed, in_flight, expected", [
    # Committed 10 (the next to read); 10 is being processed while 11..15 are done.
    (list(range(11, 16)), None, 10, (10,), None),
    # Before the first commit: 0 is being processed.
    (list(range(1, 6)), None, None, (0,), None),
    # A gap the fetcher reported covers 13, which is being processed: commit up to it.
    ([10, 11, 12, 14], (13, 14), 10, (13,), 13),
    # A record delivered twice: the copy a stage skipped acked 10 while the first copy is still processed.
    ([10, 11, 12], None, 10, (10,), None),
    # Nothing in flight below the run: a run one past the committed offset (a gap there) still commits.
    (list(range(11, 16)), None, 10, (20,), 16),
])
def test_a_message_in_flight_is_never_committed_past(acked, gap, committed, in_flight, expected):
    """Committed past, it would not be delivered again after a kill -9: its work would be lost."""
    state = bookkeeping(acked=acked, gap=gap, committed=committed, in_flight=in_flight)
    assert faust_fixes.new_offset(state, TP0) == expected


def test_the_unpatched_method_commits_past_a_message_in_flight():
    """Documents the bug: offset 10, being processed, is committed past."""
    state = bookkeeping(acked=list(range(11, 16)), gap=None, committed=10, in_flight=(10,))
    assert faust_fixes.original_new_offset(state, TP0) == 16


def test_once_the_message_in_flight_is_acked_everything_commits():
    state = bookkeeping(acked=list(range(11, 16)), gap=None, committed=10, in_flight=(10,))
    assert faust_fixes.new_offset(state, TP0) is None
    (message,) = state._unacked_messages
    message.acked = True
    state._acked[TP0].append(10)
    assert faust_fixes.new_offset(state, TP0) == 16
    assert state._acked[TP0] == []


def test_a_commit_finds_the_messages_in_flight_of_every_partition_in_one_pass():
    """Each partition is held back only by its own message in flight, and acked messages hold nothing."""
    tp1 = TP("questions-pending", 1)
    state = bookkeeping(acked=list(range(10, 16)), gap=None, committed=10, in_flight=(13,))
    state._acked[tp1], state._acked_index[tp1], state._committed_offset[tp1] = [20, 21], {20, 21}, 20
    state._unacked_messages += [SimpleNamespace(tp=tp1, offset=25, acked=False),
                                SimpleNamespace(tp=tp1, offset=21, acked=True),
                                SimpleNamespace(tp=tp1, offset=5, acked=False)]  # below the committed offset
    state._should_commit = lambda tp, offset: True
    assert faust_fixes.lowest_unacked(state) == {TP0: 13, tp1: 25}
    assert faust_fixes.filter_committable_offsets(state, [TP0, tp1]) == {TP0: 13, tp1: 22}


def test_install_patches_the_consumer():
    faust_fixes.install()
    assert Consumer._new_offset is faust_fixes.new_offset
    assert Consumer._filter_committable_offsets is faust_fixes.filter_committable_offsets


def test_creating_the_app_installs_the_fixes(monkeypatch):
    monkeypatch.setattr(Consumer, "_new_offset", faust_fixes.original_new_offset)
    QAStreamApp("qastream-test-fixes")
    assert Consumer._new_offset is faust_fixes.new_offset


async def test_a_commit_for_a_topic_the_broker_lost_is_given_up_not_retried(monkeypatch):
    """aiokafka retries UnknownTopicOrPartitionError forever; the fix returns so the rebalance goes on."""
    from aiokafka.errors import UnknownTopicOrPartitionError

    calls = []

    async def lost(self, assignment, offsets):
        calls.append(offsets)
        raise UnknownTopicOrPartitionError()

    monkeypatch.setattr(faust_fixes, "original_do_commit_offsets", lost)
    assert await faust_fixes.do_commit_offsets(None, set(), {TP0: 10}) is None
    assert calls == [{TP0: 10}]


async def test_other_commit_errors_still_reach_aiokafka_retry_loop(monkeypatch):
    from aiokafka.errors import RequestTimedOutError

    async def timed_out(self, assignment, offsets):
        raise RequestTimedOutError()

    monkeypatch.setattr(faust_fixes, "original_do_commit_offsets", timed_out)
    with pytest.raises(RequestTimedOutError):
        await faust_fixes.do_commit_offsets(None, set(), {TP0: 10})


def test_install_patches_the_commit_of_aiokafka():
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    faust_fixes.install()
    assert GroupCoordinator._do_commit_offsets is faust_fixes.do_commit_offsets


def test_metadata_requests_no_longer_ask_the_broker_to_create_topics():
    from aiokafka.protocol.metadata import MetadataRequest, MetadataRequest_v5

    faust_fixes.install()
    assert MetadataRequest(["questions-pending"]).build(MetadataRequest_v5).allow_auto_topic_creation is False
    assert MetadataRequest(["t"], True).build(MetadataRequest_v5).allow_auto_topic_creation is True


@pytest.mark.parametrize("wait, expected_ms", [(0.1, 100), (0.25, 250), (None, 1500)])
def test_the_worker_consumer_takes_the_app_fetch_wait(monkeypatch, wait, expected_ms):
    """Faust hard-codes a 1.5 s fetch wait; the app's setting replaces it (None keeps Faust's)."""
    consumer = SimpleNamespace(_fetch_max_wait_ms=1500)
    monkeypatch.setattr(faust_fixes, "original_create_worker_consumer", lambda thread, transport: consumer)
    made = faust_fixes.create_worker_consumer(SimpleNamespace(app=SimpleNamespace(fetch_max_wait=wait)), None)
    assert made is consumer and consumer._fetch_max_wait_ms == expected_ms


def test_the_app_fetch_wait_comes_from_the_settings():
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from qastream.app import app, settings

    assert app.fetch_max_wait == settings.fetch_max_wait_seconds
    assert AIOKafkaConsumerThread._create_worker_consumer is faust_fixes.create_worker_consumer
