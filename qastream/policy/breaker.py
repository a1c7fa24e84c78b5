"""A circuit breaker for the LLM: stop calling a server that is down, probe it now and then.

Without it, every question in flight keeps calling a dead server, each
failure goes through the retry schedule, and questions are dead-lettered
during an outage they could have waited out.  After ``threshold``
consecutive failures that signal an outage (no answer, time-out, 5xx other
than 503 "busy", mid-stream error: see :func:`qastream.errors.signals_outage`)
the breaker opens: no calls for a cool-down
that doubles on every failed probe (capped), then one probe call; a success
closes it.  Failures while it is open or probing are the outage's, not the
question's, and do not use up the question's retry budget.

Pure state with an injectable clock, so transitions are unit-tested.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from typing import Callable

logger = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure breaker with exponential, capped cool-down."""

    def __init__(self, threshold: int = 5, base_cooldown: float = 1.0, max_cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, name: str = "") -> None:
        self.threshold = threshold
        self.base_cooldown = base_cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self.name = name  # the server it guards, for the log
        self.state = CLOSED
        self.failures = 0
        self.cooldown = base_cooldown
        self.opened_until = 0.0
        self.probing = False
        self.transitions: deque[dict] = deque(maxlen=50)
        #: Transitions since start by the state entered: a counter, unlike the bounded list above.
        self.entered: Counter[str] = Counter()

    def _move(self, state: str, reason: str) -> None:
        if state != self.state:
            logger.warning("LLM circuit breaker%s %s -> %s (%s)", f" of {self.name}" if self.name else "",
                           self.state, state, reason)
            self.transitions.append({"at": time.time(), "from": self.state, "to": state, "reason": reason})
            self.entered[state] += 1
            self.state = state

    def allow(self) -> bool:
        """May a call go out now?  In half-open state only one probe may."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self.clock() >= self.opened_until:
            self._move(HALF_OPEN, "cool-down over: probing")
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def would_allow(self) -> bool:
        """Would :meth:`allow` let a call out now?  Asks without taking the probe."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return self.clock() >= self.opened_until
        return not self.probing

    def release(self) -> None:
        """A call :meth:`allow` let out did not go out after all (its question was cancelled meanwhile).

        In half-open state that call was the probe: without this no other
        call could probe, and every question would wait for a probe that
        never reports.  Elsewhere there is nothing to give back.
        """
        if self.state == HALF_OPEN:
            self.probing = False

    def wait_time(self) -> float:
        """Seconds until a call may be allowed (0 when closed or probing is possible)."""
        if self.state == OPEN:
            return max(0.0, self.opened_until - self.clock())
        return 0.0

    def record_success(self) -> None:
        """A call reached the server and it answered."""
        self.failures = 0
        self.probing = False
        self.cooldown = self.base_cooldown
        self._move(CLOSED, "call succeeded")

    def record_failure(self) -> bool:
        """A call failed transiently; True when the failure belongs to an outage."""
        self.failures += 1
        if self.state == HALF_OPEN:
            self.probing = False
            self.cooldown = min(self.cooldown * 2, self.max_cooldown)
            self.opened_until = self.clock() + self.cooldown
            self._move(OPEN, f"probe failed; next probe in {self.cooldown:g} s")
            return True
        if self.state == OPEN:
            return True
        if self.failures >= self.threshold:
            self.opened_until = self.clock() + self.cooldown
            self._move(OPEN, f"{self.failures} consecutive failures; probing in {self.cooldown:g} s")
            return True
        return False

    def snapshot(self) -> dict:
        """State for /metrics."""
        return {"state": self.state, "consecutive_failures": self.failures, "cooldown_seconds": self.cooldown,
                "seconds_until_probe": round(self.wait_time(), 2), "entered": dict(self.entered),
                "transitions": list(self.transitions)[-10:]}
