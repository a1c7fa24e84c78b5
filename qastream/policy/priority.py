"""The LLM slots of one worker, handed out by lane priority (:data:`qastream.policy.lanes.PRIORITY`).

Both generate agents (one per lane, :mod:`qastream.agents.generate`) take a
slot here before they call the LLM, so a worker never has more than
``llm_concurrency`` calls in flight, and a slot that frees goes to the first
lane in priority order that wants one: a waiting interactive question is
never behind a bulk one, however many bulk questions wait.

"Wants one" includes questions that are not at the gate yet: the events
Faust has already delivered to a lane's stream and that no actor has taken
(:attr:`PriorityGate.buffered`).  Without that, an interactive actor that
just released its slot and is fetching its next question would see the slot
go to a bulk waiter in the meantime; under a steady interactive load the bulk
lane would take every such slot.  A slot kept for such a question goes to a
lower lane after :attr:`PriorityGate.recheck_seconds` if the question never
comes for it (it was stale and skipped, or its actor is stuck in a send).

Within a lane, waiters are served first come, first served.  A waiter that
is cancelled leaves the queue; one cancelled just after it was handed a slot
gives the slot on, so a cancellation never loses a slot.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, Optional

from qastream.policy.lanes import PRIORITY, Lane

#: How long a free slot is kept for a higher lane's buffered questions before a lower lane may have it.
RECHECK_SECONDS = 0.05


def nothing_buffered(lane: Lane) -> int:
    """The default :attr:`PriorityGate.buffered`: a gate used outside a worker sees only its waiters."""
    return 0


class PriorityGate:
    """``slots`` permits; a released permit goes to the highest-priority lane that wants one."""

    def __init__(self, slots: int, *, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.slots = slots
        self.free = slots
        self.recheck_seconds = recheck_seconds
        #: Questions of a lane delivered to its stream and not yet at the gate (set by the generate stage).
        self.buffered: Callable[[Lane], int] = nothing_buffered
        #: Slots handed out, by lane, since the worker started.
        self.granted: Counter[str] = Counter()
        self._waiters: dict[Lane, deque[asyncio.Future[None]]] = {lane: deque() for lane in PRIORITY}
        self._recheck: Optional[asyncio.TimerHandle] = None

    def waiting(self, lane: Lane) -> int:
        """Questions of ``lane`` waiting at the gate."""
        return sum(1 for waiter in self._waiters[lane] if not waiter.done())

    async def acquire(self, lane: Lane) -> None:
        """Wait for a slot for a question of ``lane``."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[lane].append(waiter)
        self._dispatch()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as it was cancelled: pass it on
            else:
                if waiter in self._waiters[lane]:  # not yet dropped by _dispatch
                    self._waiters[lane].remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back; it goes to the next waiter by priority, or stays free."""
        self.free += 1
        self._dispatch()

    @asynccontextmanager
    async def slot(self, lane: Lane) -> AsyncIterator[None]:
        """Hold a slot for a question of ``lane`` while the block runs."""
        await self.acquire(lane)
        try:
            yield
        finally:
            self.release()

    def snapshot(self) -> dict[str, object]:
        """Counts for /metrics."""
        return {"slots": self.slots, "in_use": self.slots - self.free,
                "waiting": {lane.value: self.waiting(lane) for lane in PRIORITY},
                "granted": {lane.value: self.granted[lane.value] for lane in PRIORITY}}

    def _claimant(self, *, count_buffered: bool) -> Optional[Lane]:
        """The lane the next free slot belongs to: the first, by priority, with a waiter (or a buffered question)."""
        for lane in PRIORITY:
            if self.waiting(lane) or (count_buffered and self.buffered(lane) > 0):
                return lane
        return None

    def _dispatch(self, *, count_buffered: bool = True) -> None:
        while self.free > 0:
            lane = self._claimant(count_buffered=count_buffered)
            if lane is None:
                return
            waiters = self._waiters[lane]
            while waiters and waiters[0].done():  # cancelled: its task is about to forget it
                waiters.popleft()
            if not waiters:
                # Its questions are on their way to the gate: keep the slot for them a moment.
                self._recheck_later()
                return
            self.free -= 1
            self.granted[lane.value] += 1
            waiters.popleft().set_result(None)

    def _recheck_later(self) -> None:
        if self._recheck is None and any(self.waiting(lane) for lane in PRIORITY):
            self._recheck = asyncio.get_running_loop().call_later(self.recheck_seconds, self._on_recheck)

    def _on_recheck(self) -> None:
        """The buffered questions a slot was kept for did not come: the lanes with waiters have it."""
        self._recheck = None
        self._dispatch(count_buffered=False)
