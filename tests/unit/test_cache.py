"""qastream.services.cache: the in-process TTL cache and the key format."""

import pytest

from qastream.services import cache as cache_module
from qastream.services.cache import KEY_PREFIX, MemoryCache, cache_key, make_cache


class Clock:
    """Stands in for the ``time`` module inside qastream.services.cache only (not asyncio's clock)."""

    def __init__(self, now=1000.0):
        self.now = now

    def monotonic(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(cache_module, "time", fake)
    return fake


def result(n):
    return {"question_id": f"{n:016x}", "answer": f"answer {n}"}


@pytest.mark.parametrize("question_id, key", [
    ("0123456789abcdef", "response:0123456789abcdef"),
    ("x", "response:x"),
])
def test_cache_key(question_id, key):
    assert cache_key(question_id) == key
    assert KEY_PREFIX == "response:"


async def test_miss_then_hit_are_counted(clock):
    cache = MemoryCache(ttl_seconds=60)
    assert await cache.get(result(1)["question_id"]) is None
    assert (cache.hits, cache.misses) == (0, 1)
    await cache.put_many([result(1), result(2)])
    assert await cache.get(result(1)["question_id"]) == result(1)
    assert await cache.get(result(2)["question_id"]) == result(2)
    assert await cache.get(result(3)["question_id"]) is None
    assert (cache.hits, cache.misses, cache.errors) == (2, 2, 0)
    info = await cache.info()
    assert info == {"backend": "memory", "hits": 2, "misses": 2, "errors": 0, "ttl_seconds": 60, "entries": 2,
                    "bytes": 2 * await entry_bytes(), "max_bytes": 16 * 2**20}


async def test_entries_are_stored_under_the_response_key(clock):
    cache = MemoryCache(ttl_seconds=60)
    await cache.put_many([result(1)])
    assert list(cache._items) == [cache_key(result(1)["question_id"])]


@pytest.mark.parametrize("elapsed, hit", [(0.0, True), (59.9, True), (60.0, True), (60.01, False), (3600.0, False)])
async def test_ttl_expiry(clock, elapsed, hit):
    cache = MemoryCache(ttl_seconds=60)
    await cache.put_many([result(1)])
    clock.now += elapsed
    value = await cache.get(result(1)["question_id"])
    assert (value == result(1)) is hit
    assert (cache.hits, cache.misses) == ((1, 0) if hit else (0, 1))
    assert (await cache.info())["entries"] == (1 if hit else 0)   # an expired entry is dropped on read


async def test_rewriting_an_entry_renews_its_ttl(clock):
    cache = MemoryCache(ttl_seconds=60)
    await cache.put_many([result(1)])
    clock.now += 50
    await cache.put_many([{**result(1), "answer": "newer"}])
    clock.now += 50
    assert (await cache.get(result(1)["question_id"]))["answer"] == "newer"


async def entry_bytes() -> int:
    """What one ``result(n)`` (n < 10) costs in the cache: all of them are the same size."""
    cache = MemoryCache(ttl_seconds=60)
    await cache.put_many([result(1)])
    return cache.bytes


async def test_the_byte_bound_evicts_the_oldest(clock):
    cache = MemoryCache(ttl_seconds=60, max_bytes=3 * await entry_bytes())
    await cache.put_many([result(1), result(2)])
    await cache.put_many([result(3), result(4)])
    assert await cache.get(result(1)["question_id"]) is None
    for n in (2, 3, 4):
        assert await cache.get(result(n)["question_id"]) == result(n)
    info = await cache.info()
    assert info["entries"] == 3 and info["bytes"] == 3 * await entry_bytes() <= info["max_bytes"]


async def test_an_entry_costs_its_json_not_a_fixed_guess(clock):
    cache = MemoryCache(ttl_seconds=60)
    await cache.put_many([result(1)])
    small = cache.bytes
    await cache.put_many([{**result(2), "answer": "x" * 10_000}])
    assert cache.bytes - small >= 10_000


async def test_rewriting_an_entry_makes_it_the_newest_and_counts_it_once(clock):
    cache = MemoryCache(ttl_seconds=60, max_bytes=2 * await entry_bytes())
    await cache.put_many([result(1), result(2)])
    await cache.put_many([result(1)])
    assert cache.bytes == 2 * await entry_bytes()
    await cache.put_many([result(3)])
    assert await cache.get(result(2)["question_id"]) is None
    assert await cache.get(result(1)["question_id"]) == result(1)


async def test_an_answer_larger_than_the_cache_is_not_cached_and_evicts_nothing(clock):
    cache = MemoryCache(ttl_seconds=60, max_bytes=2 * await entry_bytes())
    await cache.put_many([result(1)])
    await cache.put_many([{**result(2), "answer": "x" * 10_000}])
    assert await cache.get(result(2)["question_id"]) is None
    assert await cache.get(result(1)["question_id"]) == result(1)


async def test_an_expired_entry_gives_its_bytes_back(clock):
    cache = MemoryCache(ttl_seconds=60)
    await cache.put_many([result(1)])
    clock.now += 61
    assert await cache.get(result(1)["question_id"]) is None
    assert cache.bytes == 0 and (await cache.info())["entries"] == 0


async def test_a_caller_changing_a_cached_answer_does_not_change_the_cache(clock):
    cache = MemoryCache(ttl_seconds=60)
    await cache.put_many([result(1)])
    (await cache.get(result(1)["question_id"]))["answer"] = "tampered"
    assert await cache.get(result(1)["question_id"]) == result(1)


async def test_put_many_of_nothing_is_a_no_op(clock):
    cache = MemoryCache(ttl_seconds=60)
    await cache.put_many([])
    assert (await cache.info())["entries"] == 0


class BrokenCache(MemoryCache):
    async def _get(self, key):
        raise ConnectionError("down")

    async def _put_many(self, items):
        raise ConnectionError("down")


async def test_cache_failures_are_counted_and_fall_through(clock):
    cache = BrokenCache(ttl_seconds=60, retry_seconds=1.0)
    await cache.put_many([result(1)])           # does not raise
    assert await cache.get(result(1)["question_id"]) is None
    assert (cache.errors, cache.misses, cache.hits) == (1, 1, 0)   # the read skipped the failed cache


async def test_a_failed_cache_is_skipped_until_its_retry_interval_passes(clock):
    cache = BrokenCache(ttl_seconds=60, retry_seconds=1.0)
    assert await cache.get("a") is None
    assert cache.suspended and cache.errors == 1
    await cache.put_many([result(1)])
    assert await cache.get("b") is None
    assert cache.errors == 1                    # nothing was asked while suspended
    clock.now += 1.0
    assert not cache.suspended
    assert await cache.get("c") is None
    assert cache.errors == 2 and cache.misses == 3


class DownThenUp(MemoryCache):
    up = False

    async def _ping(self):
        if not self.up:
            raise ConnectionError("down")


async def test_a_successful_ping_ends_the_suspension(clock):
    cache = DownThenUp(ttl_seconds=60, retry_seconds=30.0)
    with pytest.raises(ConnectionError):
        await cache.ping()
    assert cache.suspended
    cache.up = True
    await cache.ping()
    assert not cache.suspended


def test_make_cache_without_redis_url_is_in_process():
    cache = make_cache("", 30)
    assert isinstance(cache, MemoryCache) and cache.ttl_seconds == 30


def test_make_cache_bounds_the_in_process_cache_by_the_setting():
    cache = make_cache("", 30, max_bytes=7000)
    assert isinstance(cache, MemoryCache) and cache.max_bytes == 7000
