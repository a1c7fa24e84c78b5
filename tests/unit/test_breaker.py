"""The circuit breaker's transitions, on a fake clock."""

from __future__ import annotations

from qastream.policy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tripped(threshold: int = 3) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    breaker = CircuitBreaker(threshold, base_cooldown=1.0, max_cooldown=4.0, clock=clock)
    outages = [breaker.record_failure() for _ in range(threshold)]
    assert outages == [False] * (threshold - 1) + [True]
    return breaker, clock


def test_opens_after_threshold_consecutive_failures():
    breaker, _ = tripped()
    assert breaker.state == OPEN
    assert not breaker.allow()
    assert breaker.wait_time() == 1.0


def test_a_success_resets_the_count():
    breaker = CircuitBreaker(3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    assert breaker.record_failure() is False
    assert breaker.state == CLOSED


def test_one_probe_after_the_cooldown_then_closed_on_success():
    breaker, clock = tripped()
    clock.now = 1.0
    assert breaker.allow() is True and breaker.state == HALF_OPEN
    assert breaker.allow() is False  # only one probe at a time
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.allow()


def test_failed_probes_double_the_cooldown_up_to_the_cap():
    breaker, clock = tripped()
    cooldowns = []
    for _ in range(4):
        clock.now += breaker.wait_time()
        assert breaker.allow()
        assert breaker.record_failure() is True  # a probe's failure is the outage's
        cooldowns.append(breaker.wait_time())
    assert cooldowns == [2.0, 4.0, 4.0, 4.0]
    assert [t["to"] for t in breaker.transitions][:3] == [OPEN, HALF_OPEN, OPEN]


def test_calls_during_an_outage_are_bounded():
    """Polling every 50 ms through a 20 s outage lets through one probe per cool-down only."""
    breaker, clock = tripped(5)
    calls = 0
    while clock.now < 20.0:
        if breaker.allow():
            calls += 1
            breaker.record_failure()
        clock.now += 0.05
    assert calls <= 7  # probes at ~1, 3, 7, 11, 15, 19 s (4 s cap): never one per poll
    assert breaker.snapshot()["state"] in (OPEN, HALF_OPEN)


def test_a_probe_that_did_not_go_out_lets_another_probe():
    breaker, clock = tripped()
    clock.now = 1.0
    assert breaker.allow() is True  # the probe, whose question is then found cancelled
    assert breaker.allow() is False
    breaker.release()
    assert breaker.state == HALF_OPEN and breaker.allow() is True


def test_release_when_closed_or_open_changes_nothing():
    closed = CircuitBreaker(3)
    closed.release()
    assert closed.state == CLOSED and closed.allow()
    breaker, _ = tripped()
    breaker.release()
    assert breaker.state == OPEN and not breaker.allow()


def test_would_allow_asks_without_taking_the_probe():
    breaker, clock = tripped()
    assert not breaker.would_allow()
    clock.now = 1.0
    assert breaker.would_allow() and breaker.state == OPEN   # asking moves nothing
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.would_allow()                        # the probe is out
    breaker.record_success()
    assert breaker.would_allow()
    assert breaker.entered == {OPEN: 1, HALF_OPEN: 1, CLOSED: 1}
