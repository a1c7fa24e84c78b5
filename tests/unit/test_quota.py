"""qastream.policy.quota: the token bucket, decision by decision, on explicit times."""

from __future__ import annotations

import math

import pytest

from qastream.policy.quota import Bucket, Decision, capacity, full_at, take, unlimited


def run(times: list[float], rate: float | None, burst: int, bucket: Bucket | None = None) -> list[Decision]:
    """Take once at each of ``times``, threading the state through."""
    decisions = []
    for now in times:
        decision = take(bucket, rate, burst, now)
        bucket = decision.bucket
        decisions.append(decision)
    return decisions


def allowed(decisions: list[Decision]) -> list[bool]:
    return [d.allowed for d in decisions]


def test_a_new_key_gets_its_burst_then_is_refused():
    decisions = run([100.0] * 6, rate=1.0, burst=5)
    assert allowed(decisions) == [True] * 5 + [False]
    assert [d.retry_after for d in decisions] == [0.0] * 5 + [1.0]
    assert decisions[-1].bucket == Bucket(0.0, 100.0)


def test_decision_unpacks_as_allowed_bucket_retry_after():
    ok, bucket, retry_after = take(None, 2.0, 3, 10.0)
    assert (ok, bucket, retry_after) == (True, Bucket(2.0, 10.0), 0.0)


@pytest.mark.parametrize("rate, burst, times, expected", [
    # one token every 0.5 s after the burst of 2
    (2.0, 2, [0, 0, 0, 0.25, 0.5, 0.5, 1.0], [True, True, False, False, True, False, True]),
    # a long pause refills only up to the burst
    (1.0, 3, [0, 0, 0, 100, 100, 100, 100], [True, True, True, True, True, True, False]),
    # slow rate: one request every 10 s
    (0.1, 1, [0, 5, 9.99, 10, 19.99, 20], [True, False, False, True, False, True]),
    # burst 0 behaves as 1: nothing beyond the rate, one at a time
    (1.0, 0, [0, 0, 1, 1.5, 2], [True, False, True, False, True]),
])
def test_refill_at_the_rate(rate, burst, times, expected):
    assert allowed(run([float(t) for t in times], rate, burst)) == expected


@pytest.mark.parametrize("rate, burst, seconds", [(1.0, 1, 10), (5.0, 10, 3), (0.5, 2, 60), (1000.0, 50, 2)])
def test_never_more_than_rate_times_t_plus_burst(rate, burst, seconds):
    step = 1 / (rate * 7)  # asking 7 times faster than the rate
    times = [i * step for i in range(int(seconds / step))]
    got = sum(allowed(run(times, rate, burst)))
    assert got <= rate * times[-1] + burst
    assert got >= rate * times[-1] + burst - 1


@pytest.mark.parametrize("rate, burst", [(1.0, 1), (3.0, 2), (0.1, 4), (7.0, 3), (1e6, 1)])
def test_retry_after_is_exactly_when_the_next_token_is_there(rate, burst):
    decisions = run([50.0] * (burst + 1), rate, burst)
    refused = decisions[-1]
    assert not refused.allowed and refused.retry_after == pytest.approx(1 / rate)
    early = take(refused.bucket, rate, burst, 50.0 + refused.retry_after * 0.99)
    assert not early.allowed and early.retry_after == pytest.approx(refused.retry_after * 0.01, abs=1e-9)
    # Exact but for float rounding of the clock (the caller rounds up to whole seconds anyway).
    assert take(refused.bucket, rate, burst, 50.0 + refused.retry_after * (1 + 1e-6)).allowed


def test_retry_after_counts_the_partial_token():
    bucket = Bucket(0.25, 10.0)
    decision = take(bucket, 0.5, 1, 10.0)
    assert not decision.allowed and decision.retry_after == pytest.approx(1.5)


def test_a_clock_going_backwards_refills_nothing_and_keeps_the_later_time():
    empty = Bucket(0.0, 100.0)
    back = take(empty, 1.0, 5, 90.0)
    assert not back.allowed
    assert back.bucket == empty                       # the later time is kept
    assert back.retry_after == pytest.approx(11.0)    # 10 s until the clock is back, then 1 s to refill
    # When the clock catches up, the seconds already counted are not counted twice.
    assert not take(back.bucket, 1.0, 5, 100.5).allowed
    assert take(back.bucket, 1.0, 5, 101.0).allowed


def test_a_clock_going_backwards_still_spends_tokens_held():
    decision = take(Bucket(3.0, 100.0), 1.0, 5, 50.0)
    assert decision == Decision(True, Bucket(2.0, 100.0), 0.0)


@pytest.mark.parametrize("rate", [None, math.inf])
def test_unlimited_keys_are_always_allowed_and_keep_no_state(rate):
    decisions = run([0.0] * 1000, rate, 1, bucket=Bucket(0.0, 0.0))
    assert all(d == Decision(True, None, 0.0) for d in decisions)


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan, -math.inf])
def test_a_rate_that_admits_nothing_is_a_configuration_error(rate):
    with pytest.raises(ValueError, match="rate must be a positive number"):
        take(None, rate, 5, 0.0)


@pytest.mark.parametrize("rate, expected", [(None, True), (math.inf, True), (1e-9, False), (1e12, False)])
def test_unlimited(rate, expected):
    assert unlimited(rate) is expected


@pytest.mark.parametrize("burst, expected", [(-3, 1.0), (0, 1.0), (1, 1.0), (7, 7.0), (10**12, 1e12)])
def test_capacity(burst, expected):
    assert capacity(burst) == expected


def test_huge_burst_and_rate():
    decisions = run([0.0] * 10_000, rate=1e12, burst=10**12)
    assert all(allowed(decisions))
    assert decisions[-1].bucket == Bucket(1e12 - 10_000, 0.0)
    # A huge rate refills in a nanosecond; a very long idle time cannot overflow past the burst.
    bucket = Bucket(0.0, 0.0)
    assert take(bucket, 1e12, 3, 1e-9).allowed
    assert take(bucket, 1e300, 3, 1e300).bucket == Bucket(2.0, 1e300)


def test_a_tiny_rate_gives_a_long_but_finite_retry_after():
    decision = take(Bucket(0.0, 0.0), 1e-6, 1, 0.0)
    assert not decision.allowed and decision.retry_after == pytest.approx(1e6)


@pytest.mark.parametrize("bucket, rate, burst, expected", [
    (Bucket(0.0, 10.0), 1.0, 5, 15.0),
    (Bucket(4.5, 10.0), 2.0, 5, 10.25),
    (Bucket(5.0, 10.0), 1.0, 5, 10.0),    # already full
    (Bucket(0.0, 10.0), 1.0, 0, 11.0),    # burst 0 holds one token
])
def test_full_at(bucket, rate, burst, expected):
    assert full_at(bucket, rate, burst) == pytest.approx(expected)


def test_a_full_bucket_decides_like_no_bucket():
    """What lets the limiter forget full buckets (and Redis expire them) without changing a decision."""
    bucket = take(Bucket(0.0, 0.0), 2.0, 3, 0.0).bucket
    assert bucket is not None
    later = full_at(bucket, 2.0, 3) + 0.1
    forgotten = run([later] * 5, 2.0, 3)
    kept = run([later] * 5, 2.0, 3, bucket=bucket)
    assert allowed(kept) == allowed(forgotten) == [True, True, True, False, False]
