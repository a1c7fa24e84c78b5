"""qastream.services.limiter without Redis: the in-process buckets, eviction, and falling back from Redis.

The Redis script itself runs against the real server in
tests/integration/test_rate_limit_redis.py; here a stand-in for the
registered script plays a Redis that fails and comes back.
"""

from __future__ import annotations

import logging

import pytest

from qastream.services.limiter import KEY_PREFIX, Limiter, MemoryBuckets


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_in_process_burst_then_retry_after(clock):
    limiter = Limiter(clock=clock)
    results = [await limiter.take("k", 2.0, 3) for _ in range(4)]
    assert results == [None, None, None, 0.5]
    clock.now += 0.5
    assert await limiter.take("k", 2.0, 3) is None
    assert await limiter.take("k", 2.0, 3) == pytest.approx(0.5)


async def test_keys_have_separate_buckets(clock):
    limiter = Limiter(clock=clock)
    assert await limiter.take("a", 1.0, 1) is None
    assert await limiter.take("a", 1.0, 1) == 1.0
    assert await limiter.take("b", 1.0, 1) is None


async def test_unlimited_keys_are_allowed_and_take_no_memory(clock):
    limiter = Limiter(clock=clock)
    assert all([await limiter.take(f"k{n}", None, 0) is None for n in range(100)])
    assert len(limiter.memory) == 0


async def test_a_rate_of_zero_is_refused_loudly(clock):
    with pytest.raises(ValueError):
        await Limiter(clock=clock).take("k", 0.0, 5)


def test_full_buckets_are_forgotten(clock):
    buckets = MemoryBuckets(clock=clock)
    for n in range(1000):
        assert buckets.take(f"k{n}", 10.0, 5) is None   # each bucket is full again 0.1 s later
    assert len(buckets) == 1000
    clock.now += 0.1
    buckets.take("late", 10.0, 5)
    assert len(buckets) == 1                             # only the key just used


def test_a_busy_key_is_kept_while_idle_full_ones_go(clock):
    buckets = MemoryBuckets(clock=clock)
    for _ in range(5):
        buckets.take("busy", 1.0, 5)                     # empty: full again in 5 s
    buckets.take("idle", 100.0, 5)                       # full again in 0.01 s
    clock.now += 1.0
    buckets.take("other", 100.0, 5)
    # "busy" is the least recently used and not full, so the sweep stops there: "idle" waits its turn.
    assert len(buckets) == 3
    clock.now += 4.0
    buckets.take("other", 100.0, 5)
    assert len(buckets) == 1
    assert buckets.take("busy", 1.0, 5) is None           # forgotten when full: decides as before


def test_the_bound_forgets_the_least_recently_used_first(clock):
    buckets = MemoryBuckets(max_buckets=3, clock=clock)
    for key in ("a", "b", "c"):
        buckets.take(key, 1.0, 1)
    buckets.take("a", 1.0, 1)                            # "a" is now the most recently used
    buckets.take("d", 1.0, 1)
    assert len(buckets) == 3
    assert buckets.take("b", 1.0, 1) is None             # forgotten early: a full bucket again (lenient)
    assert buckets.take("a", 1.0, 1) == 1.0              # kept: still empty


class Script:
    """Stands in for the registered Lua script: a Redis that is down until ``up`` is set."""

    def __init__(self, reply: list) -> None:
        self.up = False
        self.reply = reply
        self.calls: list[tuple[list[str], list[float]]] = []

    async def __call__(self, keys: list[str], args: list[float]) -> list:
        self.calls.append((keys, args))
        if not self.up:
            raise ConnectionError("Connection refused")
        return self.reply


def redis_limiter(clock: Clock, reply: list) -> tuple[Limiter, Script]:
    limiter = Limiter("redis://127.0.0.1:1/0", retry_seconds=1.0, clock=clock)
    script = Script(reply)
    limiter.script = script
    return limiter, script


async def test_redis_decides_when_it_answers(clock):
    limiter, script = redis_limiter(clock, [0, b"0.25"])
    script.up = True
    assert await limiter.take("key-7", 4.0, 0) == 0.25
    assert script.calls == [([KEY_PREFIX + "key-7"], [4.0, 1.0])]   # burst 0 holds one token
    script.reply = [1, b"0"]
    assert await limiter.take("key-7", 4.0, 0) is None
    assert len(limiter.memory) == 0


async def test_unreachable_redis_falls_back_logs_once_and_recovers(clock, caplog):
    caplog.set_level(logging.INFO, logger="qastream.services.limiter")
    limiter, script = redis_limiter(clock, [0, b"0.5"])
    assert [await limiter.take("k", 1.0, 2) for _ in range(3)] == [None, None, 1.0]   # in-process buckets
    assert len(script.calls) == 1                       # skipped after the failure, for retry_seconds
    assert limiter.degraded and limiter.errors == 1
    clock.now += 1.0
    assert await limiter.take("k", 1.0, 2) is None     # Redis tried again, still down: the refilled token
    assert limiter.errors == 2 and len(script.calls) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rate limiting without redis" in warnings[0].getMessage()

    script.up = True
    clock.now += 1.0
    assert await limiter.take("k", 1.0, 2) == 0.5      # Redis decides again
    assert not limiter.degraded
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "redis at redis://127.0.0.1:1/0 answers again: rate limits are shared again"]


async def test_a_limiter_without_redis_url_starts_without_connecting(clock):
    limiter = Limiter(clock=clock)
    await limiter.on_start()
    assert limiter.client is None and limiter.script is None
    await limiter.on_stop()


def test_the_app_creates_one_limiter_on_the_caches_redis_setting():
    from qastream.app import app, limiter, settings

    assert limiter in app.first_services
    assert (limiter.redis_url, limiter.timeout, limiter.retry_seconds) == (
        settings.redis_url, settings.redis_timeout_seconds, settings.cache_retry_seconds)
