"""qastream.db.batcher: group commit of concurrent submits."""

import asyncio

import pytest

from qastream.db.batcher import GroupCommitter


class Recorder:
    """A flush that records its batches, can be held at a gate, and fails on a poisoned item.

    ``flushing`` is set once a flush has recorded its batch; with a ``gate``, every flush then waits
    until the test opens it.  Tests order their steps with these, not with sleeps: a flush "still
    running" is one held at the gate, however slow the machine.
    """

    def __init__(self, delay=0.0, poison=None, gate=None):
        self.delay = delay
        self.poison = poison
        self.gate = gate
        self.flushing = asyncio.Event()
        self.batches = []

    async def __call__(self, items):
        self.batches.append(list(items))
        self.flushing.set()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        if self.poison is not None and self.poison in items:
            raise ValueError(f"cannot store {self.poison}")
        return [f"result-{item}" for item in items]


@pytest.fixture
async def make_committer():
    committers = []

    def make(flush, **kwargs):
        committer = GroupCommitter(flush, **kwargs)
        committer.start()
        committers.append(committer)
        return committer

    yield make
    for committer in committers:
        await committer.stop()


async def test_concurrent_submits_are_flushed_in_batches(make_committer):
    flush = Recorder(gate=asyncio.Event())
    committer = make_committer(flush)
    first = asyncio.ensure_future(committer.submit("first"))
    await flush.flushing.wait()  # the flush of "first" is running, held at the gate
    assert flush.batches == [["first"]]
    rest = [asyncio.ensure_future(committer.submit(i)) for i in range(50)]
    flush.gate.set()  # the 50 submits were scheduled first: they queue before "first" is done
    results = await asyncio.gather(*rest)
    assert await first == "result-first"
    assert results == [f"result-{i}" for i in range(50)]
    assert len(flush.batches) < 51
    assert len(flush.batches) <= 3
    assert sorted(x for batch in flush.batches[1:] for x in batch) == list(range(50))


async def test_each_caller_gets_the_result_of_its_own_item(make_committer):
    async def flush(items):
        await asyncio.sleep(0.01)
        return [item * 10 for item in items]

    committer = make_committer(flush)
    items = [7, 3, 9, 1, 4, 4, 0]
    assert await asyncio.gather(*(committer.submit(i) for i in items)) == [i * 10 for i in items]


async def test_results_map_by_position_within_a_batch(make_committer):
    async def reverse_flush(items):
        return [f"{i}:{item}" for i, item in enumerate(items)]

    committer = make_committer(reverse_flush)
    results = await asyncio.gather(*(committer.submit(c) for c in "abcde"))
    assert results == ["0:a", "1:b", "2:c", "3:d", "4:e"]


async def test_idle_committer_flushes_a_single_item_at_once(make_committer):
    flush = Recorder()
    committer = make_committer(flush)
    assert await asyncio.wait_for(committer.submit("only"), 1.0) == "result-only"
    assert flush.batches == [["only"]]


async def test_max_batch_bounds_each_flush(make_committer):
    flush = Recorder(delay=0.01)
    committer = make_committer(flush, max_batch=10)
    results = await asyncio.gather(*(committer.submit(i) for i in range(25)))
    assert results == [f"result-{i}" for i in range(25)]
    assert all(len(batch) <= 10 for batch in flush.batches)
    assert sum(len(batch) for batch in flush.batches) == 25


async def test_flush_error_reaches_every_caller_of_the_batch_and_later_batches_work(make_committer):
    flush = Recorder(delay=0.02, poison="bad")
    committer = make_committer(flush)
    outcomes = await asyncio.gather(*(committer.submit(x) for x in ("a", "bad", "c")), return_exceptions=True)
    failed_batch = next(batch for batch in flush.batches if "bad" in batch)
    assert set(failed_batch) >= {"a", "bad", "c"}
    for outcome in outcomes:
        assert isinstance(outcome, ValueError) and str(outcome) == "cannot store bad"
    # The committer survived the failure.
    assert await asyncio.gather(committer.submit("d"), committer.submit("e")) == ["result-d", "result-e"]


async def test_flush_error_spares_other_batches(make_committer):
    flush = Recorder(poison="bad", gate=asyncio.Event())
    committer = make_committer(flush)
    ok_first = asyncio.ensure_future(committer.submit("ok1"))
    await flush.flushing.wait()  # "ok1" is being flushed alone, held at the gate
    bad = asyncio.ensure_future(committer.submit("bad"))
    ok_second = asyncio.ensure_future(committer.submit("ok2"))  # rides with "bad"
    flush.gate.set()  # both submits were scheduled first: they queue while "ok1" is flushed
    assert await ok_first == "result-ok1"
    with pytest.raises(ValueError):
        await bad
    with pytest.raises(ValueError):
        await ok_second
    assert flush.batches == [["ok1"], ["bad", "ok2"]]


async def test_submit_before_start_raises():
    committer = GroupCommitter(Recorder())
    with pytest.raises(RuntimeError, match="not running"):
        await committer.submit("x")


async def test_submit_after_stop_raises():
    committer = GroupCommitter(Recorder())
    committer.start()
    assert await committer.submit("x") == "result-x"
    await committer.stop()
    with pytest.raises(RuntimeError, match="not running"):
        await committer.submit("y")


async def test_stop_during_a_flush_still_answers_its_callers():
    flush = Recorder(gate=asyncio.Event())
    committer = GroupCommitter(flush)
    committer.start()
    caller = asyncio.ensure_future(committer.submit("in-flight"))
    await flush.flushing.wait()  # the flush of "in-flight" is running, held at the gate
    stopping = asyncio.ensure_future(committer.stop())
    flush.gate.set()  # stop() was scheduled first: it begins while the flush is still running
    await stopping
    try:
        assert await asyncio.wait_for(caller, 1.0) == "result-in-flight"
    finally:
        caller.cancel()


class Outage(Exception):
    """The database is down: no point flushing item by item."""


def rejected(exc: Exception) -> bool:
    return isinstance(exc, ValueError)


async def test_isolated_batch_fails_only_the_item_that_fails_alone(make_committer):
    flush = Recorder(delay=0.02, poison="bad")
    committer = make_committer(flush, isolate=rejected)
    outcomes = await asyncio.gather(*(committer.submit(x) for x in ("a", "bad", "c")), return_exceptions=True)
    assert outcomes[0] == "result-a" and outcomes[2] == "result-c"
    assert isinstance(outcomes[1], ValueError)
    assert flush.batches[-3:] == [["a"], ["bad"], ["c"]]  # the failed batch again, one item at a time


async def test_thirty_poisoned_callers_of_three_hundred_fail_alone(make_committer):
    """The measured case: 30 bad rows used to turn 268 of 270 good requests into errors."""
    class ManyPoisons(Recorder):
        async def __call__(self, items):
            self.batches.append(list(items))
            await asyncio.sleep(0)
            if any(item.startswith("bad") for item in items):
                raise ValueError("cannot store")
            return [f"result-{item}" for item in items]

    committer = make_committer(ManyPoisons(), isolate=rejected)
    items = [f"bad{i}" if i % 10 == 0 else f"ok{i}" for i in range(300)]
    outcomes = await asyncio.gather(*(committer.submit(x) for x in items), return_exceptions=True)
    good = [o for item, o in zip(items, outcomes) if item.startswith("ok")]
    bad = [o for item, o in zip(items, outcomes) if item.startswith("bad")]
    assert good == [f"result-{item}" for item in items if item.startswith("ok")]
    assert len(bad) == 30 and all(isinstance(o, ValueError) for o in bad)


async def test_outage_is_not_retried_item_by_item(make_committer):
    class Down(Recorder):
        async def __call__(self, items):
            self.batches.append(list(items))
            await asyncio.sleep(0.01)
            raise Outage("connection refused")

    flush = Down()
    committer = make_committer(flush, isolate=rejected)
    outcomes = await asyncio.gather(*(committer.submit(x) for x in "abc"), return_exceptions=True)
    assert all(isinstance(o, Outage) for o in outcomes)
    assert all(len(batch) > 0 for batch in flush.batches) and sum(map(len, flush.batches)) == 3


async def test_outage_during_isolation_reaches_the_rest_without_more_flushes(make_committer):
    class BadThenDown(Recorder):
        async def __call__(self, items):
            self.batches.append(list(items))
            await asyncio.sleep(0.01)
            if len(items) > 1:
                raise ValueError("cannot store bad")
            if items == ["a"]:
                return ["result-a"]
            raise Outage("connection lost")

    flush = BadThenDown()
    committer = make_committer(flush, isolate=rejected)
    outcomes = await asyncio.gather(*(committer.submit(x) for x in "abcd"), return_exceptions=True)
    assert outcomes[0] == "result-a"
    assert all(isinstance(o, Outage) for o in outcomes[1:])
    assert flush.batches[-2:] == [["a"], ["b"]]  # c and d were not tried against a database that is down
