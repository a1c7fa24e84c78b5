"""qastream.streaming.watchers: the registry ``track`` notifies; a slow stream never slows it."""

from __future__ import annotations

import asyncio
import time

import pytest

from qastream.agents.track import track
from qastream.app import app
from qastream.models import StatusEvent
from qastream.policy.lifecycle import STAGE_STATE, Stage, StatusRecord, version
from qastream.runtime import Runtime
from qastream.settings import Settings
from qastream.streaming.watchers import DEPTH, Mailbox, Update, Watchers
from qastream.tables.status import attempts_table, status_table


def update(n: int, stage: Stage = Stage.GENERATING) -> Update:
    record: StatusRecord = {
        "question_id": "q1", "state": STAGE_STATE[stage], "stage": stage, "epoch": 1, "attempt": 1, "retries": n,
        "version": list(version(1, 1, n, stage)), "accepted_at": 1.0, "updated_at": 2.0, "detail": None,
        "result": None}
    return Update(record, None)


async def drain(mailbox: Mailbox) -> list[int]:
    got = []
    while (item := await mailbox.get(0.01)) is not None:
        got.append(item.record["retries"])
    return got


async def test_a_mailbox_hands_updates_over_in_order():
    mailbox = Mailbox()
    for n in range(3):
        mailbox.put(update(n))
    assert await drain(mailbox) == [0, 1, 2]
    assert mailbox.dropped == 0


async def test_a_stream_that_falls_behind_keeps_the_newest_updates_and_put_never_waits():
    mailbox = Mailbox(depth=4)
    started = time.perf_counter()
    for n in range(10_000):     # nobody reads: the writer goes on regardless
        mailbox.put(update(n))
    mailbox.put(update(10_000, Stage.COMPLETED))
    assert time.perf_counter() - started < 1.0
    assert await drain(mailbox) == [9_997, 9_998, 9_999, 10_000]
    assert mailbox.dropped == 10_001 - 4


async def test_the_newest_four_are_kept_with_the_terminal_one_last():
    mailbox = Mailbox(depth=4)
    for n in range(10):
        mailbox.put(update(n))
    mailbox.put(update(10, Stage.COMPLETED))
    kept = []
    while (item := await mailbox.get(0.01)) is not None:
        kept.append((item.record["retries"], item.record["stage"]))
    assert kept == [(7, Stage.GENERATING), (8, Stage.GENERATING), (9, Stage.GENERATING), (10, Stage.COMPLETED)]


async def test_get_waits_for_an_update_and_gives_up_after_its_timeout():
    mailbox = Mailbox()
    started = time.monotonic()
    assert await mailbox.get(0.05) is None
    assert time.monotonic() - started >= 0.04
    waiting = asyncio.ensure_future(mailbox.get(5))
    await asyncio.sleep(0.01)
    mailbox.put(update(1))
    assert (await asyncio.wait_for(waiting, 1)).record["retries"] == 1


async def test_a_closed_mailbox_ends_a_waiting_stream_at_once():
    mailbox = Mailbox()
    waiting = asyncio.ensure_future(mailbox.get(30))
    await asyncio.sleep(0.01)
    mailbox.close()
    assert await asyncio.wait_for(waiting, 1) is None
    mailbox.put(update(1))
    assert await mailbox.get(0.01) is None and mailbox.closed


async def test_publish_reaches_every_stream_of_that_question_only_while_it_watches():
    watchers = Watchers(limit=8)
    with watchers.watching("q1") as first, watchers.watching("q1") as second, watchers.watching("q2") as other:
        watchers.publish("q1", update(1))
        assert await drain(first) == await drain(second) == [1]
        assert await drain(other) == []
    watchers.publish("q1", update(2))   # nobody watches: costs a lookup, keeps nothing
    assert await drain(first) == [] and watchers._by_question == {}


async def test_a_slow_stream_does_not_hold_another_one_back():
    watchers = Watchers(limit=8, depth=2)
    with watchers.watching("q1") as slow, watchers.watching("q1") as quick:
        for n in range(5):
            watchers.publish("q1", update(n))
            assert (await quick.get(0.01)).record["retries"] == n
        assert await drain(slow) == [3, 4]


async def test_close_all_ends_served_streams_and_cancels_relayed_ones():
    watchers = Watchers(limit=8)

    async def relaying() -> None:
        with watchers.relaying():
            await asyncio.sleep(30)

    relayed = asyncio.ensure_future(relaying())
    await asyncio.sleep(0.01)
    with watchers.watching("q1") as served:
        assert len(watchers.relays) == 1
        watchers.close_all()
        assert served.closed
    with pytest.raises(asyncio.CancelledError):
        await relayed
    assert watchers.relays == set()


def test_the_default_depth_covers_a_question_with_every_retry():
    """Three attempts of four stages each, plus retries: a client keeping up loses nothing."""
    assert DEPTH >= 3 * 4 + 1


# -- track is the one that publishes ------------------------------------------------------------------------

@pytest.fixture
def memory_app():
    app.finalize()
    app.flow_control.resume()
    yield
    for table in (status_table, attempts_table):
        table.data.clear()


def event(stage: str, attempt: int = 1) -> StatusEvent:
    return StatusEvent(question_id="q1", stage=stage, epoch=1, attempt=attempt, retries=0, accepted_at=1.0, at=2.0)


async def test_track_hands_each_change_to_the_watchers_once(memory_app):
    with app.runtime.watchers.watching("q1") as mailbox:
        async with track.test_context() as agent:
            for stage in ("queued", "generating", "generating", "scoring", "queued", "completed"):
                await agent.put(event(stage), key="q1")   # a redelivered generating, a late queued
        got = []
        while (item := await mailbox.get(0.01)) is not None:
            got.append((item.record["stage"], item.attempts))
    assert [stage for stage, _ in got] == ["queued", "generating", "scoring", "completed"]
    assert got[-1][1] == {"epoch": 1, "generations": 1, "retries": 0}   # the attempt counts beside it


def test_the_runtime_bounds_its_streams_by_the_setting():
    assert Runtime.from_settings(Settings(live_max_streams=5)).watchers.gate.limit == 5
