"""qastream.policy.keycache: lookups kept for ttl seconds, a bounded number of them, uses recorded once a minute."""

import pytest

from qastream.policy.keycache import KeyCache


@pytest.mark.parametrize("age, hit", [(0.0, True), (0.49, True), (0.5, False), (5.0, False)])
def test_a_lookup_is_reused_for_ttl_seconds_only(age, hit):
    cache = KeyCache(0.5)
    cache.put("h", "principal", 100.0)
    assert cache.get("h", 100.0 + age) == ((True, "principal") if hit else (False, None))


def test_unknown_keys_are_remembered_too():
    cache = KeyCache(0.5)
    cache.put("h", None, 100.0)
    assert cache.get("h", 100.1) == (True, None)
    assert cache.get("other", 100.1) == (False, None)


def test_a_ttl_of_zero_remembers_nothing():
    cache = KeyCache(0.0)
    cache.put("h", "principal", 100.0)
    assert cache.get("h", 100.0) == (False, None) and cache.entries == {}


def test_entries_are_bounded_expired_first_then_oldest():
    cache = KeyCache(1.0, max_entries=3)
    cache.put("old", 1, 0.0)
    cache.put("a", 2, 10.0)
    cache.put("b", 3, 10.1)
    cache.put("c", 4, 10.2)  # "old" has expired: it goes
    assert list(cache.entries) == ["a", "b", "c"]
    cache.put("d", 5, 10.3)  # nothing expired: the oldest goes
    assert list(cache.entries) == ["b", "c", "d"]
    cache.put("c", 6, 10.4)  # refreshing one that is there evicts nothing
    assert list(cache.entries) == ["b", "d", "c"] and cache.get("c", 10.5) == (True, 6)


def test_random_keys_cannot_grow_the_cache():
    cache = KeyCache(0.5, max_entries=100)
    for n in range(10_000):
        cache.put(f"h{n}", None, 100.0)
    assert len(cache.entries) == 100


def test_a_use_is_recorded_at_most_once_a_minute_per_key():
    cache = KeyCache(0.5)
    assert [cache.due_touch(1, t) for t in (0.0, 1.0, 59.9, 60.0, 61.0)] == [True, False, False, True, False]
    assert cache.due_touch(2, 61.0) is True
