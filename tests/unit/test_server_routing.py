"""qastream.policy.servers: which LLM server takes a call, the pool's breaker state, the model of an attempt."""

from __future__ import annotations

import pytest

from qastream.policy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from qastream.policy.servers import Candidate, ServerHealth, model_for, pick_server, pool_state


def c(index: int, load: int = 0, calls: int = 0, available: bool = True, preferred: bool = True) -> Candidate:
    return Candidate(index, load, calls, available, preferred)


@pytest.mark.parametrize("candidates, expected", [
    ([], None),
    ([c(0)], 0),
    # The least busy server takes the call.
    ([c(0, load=3), c(1, load=1), c(2, load=2)], 1),
    # Equally busy: the one used least, then the first listed.
    ([c(0, load=1, calls=9), c(1, load=1, calls=4)], 1),
    ([c(0, calls=2), c(1, calls=2)], 0),
    # A server whose breaker is open is drained, however idle.
    ([c(0, load=0, available=False), c(1, load=7)], 1),
    ([c(0, available=False), c(1, available=False)], None),
    # The server the question failed on (or that lacks the model) only when no other may take the call...
    ([c(0, load=0, preferred=False), c(1, load=5)], 1),
    # ...and then it does: a lone server still serves the retry.
    ([c(0, preferred=False)], 0),
    ([c(0, preferred=False), c(1, available=False)], 0),
    ([c(0, load=2, preferred=False), c(1, load=9, preferred=False)], 0),
])
def test_pick_server(candidates, expected):
    assert pick_server(candidates) == expected


@pytest.mark.parametrize("states, expected", [
    ([CLOSED], CLOSED), ([OPEN], OPEN), ([HALF_OPEN], HALF_OPEN),
    ([OPEN, CLOSED], CLOSED), ([OPEN, HALF_OPEN], HALF_OPEN), ([OPEN, OPEN], OPEN),
])
def test_pool_state_is_closed_while_any_server_is(states, expected):
    assert pool_state(states) == expected


@pytest.mark.parametrize("attempt, escalation, expected", [
    (1, "", "small"), (2, "", "small"),
    (1, "big", "small"),          # a first attempt, and its error retries, use the configured model
    (2, "big", "big"), (3, "big", "big"),   # regenerations after a low score escalate
])
def test_model_for(attempt, escalation, expected):
    assert model_for(attempt, "small", escalation) == expected


def test_a_missing_model_is_forgotten_when_its_time_is_up():
    health = ServerHealth("http://a:1", CircuitBreaker())
    health.missing["m"] = 10.0
    assert health.lacks("m", 9.0) and not health.lacks("other", 9.0)
    assert not health.lacks("m", 10.0) and "m" not in health.missing
