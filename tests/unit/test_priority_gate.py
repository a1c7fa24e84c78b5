"""qastream.policy.priority: LLM slots go to interactive questions first, and none is ever lost."""

from __future__ import annotations

import asyncio

import pytest

from qastream.policy.lanes import Lane, lane_of
from qastream.policy.priority import PriorityGate

INTER, BULK = Lane.INTERACTIVE, Lane.BULK


async def settle() -> None:
    """Let every task that can run, run."""
    for _ in range(5):
        await asyncio.sleep(0)


class Holders:
    """Tasks that each take a slot for one lane and hold it until told to give it back."""

    def __init__(self, gate: PriorityGate) -> None:
        self.gate = gate
        self.order: list[str] = []
        self.done: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    def start(self, name: str, lane: Lane) -> asyncio.Task:
        self.done[name] = asyncio.Event()

        async def hold() -> None:
            async with self.gate.slot(lane):
                self.order.append(name)
                await self.done[name].wait()

        self.tasks[name] = asyncio.create_task(hold())
        return self.tasks[name]

    async def finish(self, name: str) -> None:
        self.done[name].set()
        await self.tasks[name]
        await settle()


@pytest.mark.parametrize("value, lane", [("bulk", BULK), ("interactive", INTER), (None, INTER), ("", INTER), ("vip", INTER)])
def test_lane_of_reads_wire_values(value, lane):
    assert lane_of(value) is lane


async def test_free_slots_are_taken_at_once_up_to_the_limit():
    gate = PriorityGate(2)
    h = Holders(gate)
    for name, lane in (("b1", BULK), ("i1", INTER), ("b2", BULK)):
        h.start(name, lane)
    await settle()
    assert h.order == ["b1", "i1"] and gate.free == 0 and gate.waiting(BULK) == 1


@pytest.mark.parametrize("arrivals, expected", [
    # (name, lane) in arrival order while both slots are busy -> order in which they get a slot
    ([("b3", BULK), ("i1", INTER), ("b4", BULK), ("i2", INTER)], ["i1", "i2", "b3", "b4"]),   # interactive first, FIFO within a lane
    ([("b3", BULK), ("b4", BULK)], ["b3", "b4"]),
    ([("i1", INTER), ("i2", INTER), ("i3", INTER)], ["i1", "i2", "i3"]),
    ([("i1", INTER), ("b3", BULK), ("i2", INTER)], ["i1", "i2", "b3"]),
])
async def test_a_freed_slot_goes_to_a_waiting_interactive_question_first(arrivals, expected):
    gate = PriorityGate(2)
    h = Holders(gate)
    h.start("b1", BULK)
    h.start("b2", BULK)
    await settle()
    for name, lane in arrivals:
        h.start(name, lane)
        await settle()
    for name in ["b1", "b2", *expected]:
        await h.finish(name)
    assert h.order == ["b1", "b2", *expected]
    assert gate.free == 2
    assert gate.snapshot()["granted"] == {"bulk": 2 + sum(n.startswith("b") for n in expected),
                                          "interactive": sum(n.startswith("i") for n in expected)}


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_gets_the_slot():
    gate = PriorityGate(1)
    h = Holders(gate)
    h.start("b1", BULK)
    await settle()
    waiting = h.start("i1", INTER)
    h.start("b2", BULK)
    await settle()
    waiting.cancel()
    await settle()
    assert gate.waiting(INTER) == 0 and gate.waiting(BULK) == 1
    await h.finish("b1")
    assert h.order == ["b1", "b2"]
    await h.finish("b2")
    assert gate.free == 1


async def test_a_waiter_cancelled_just_after_it_was_handed_a_slot_passes_it_on():
    gate = PriorityGate(1)
    h = Holders(gate)
    await gate.acquire(BULK)
    unlucky = h.start("i1", INTER)
    h.start("b2", BULK)
    await settle()
    # The slot is handed to i1, and i1 is cancelled before it runs again: b2 must get the slot.
    gate.release()
    unlucky.cancel()
    await settle()
    assert unlucky.cancelled()
    assert h.order == ["b2"]
    await h.finish("b2")
    assert gate.free == 1 and gate.waiting(INTER) == gate.waiting(BULK) == 0


async def test_a_slot_is_kept_for_interactive_questions_already_buffered():
    """An interactive actor between two questions is not at the gate yet; its next question is buffered."""
    buffered = {INTER: 1, BULK: 0}
    gate = PriorityGate(1, recheck_seconds=60)
    gate.buffered = lambda lane: buffered[lane]
    h = Holders(gate)
    h.start("i1", INTER)
    await settle()
    h.start("b1", BULK)
    await h.finish("i1")
    assert h.order == ["i1"] and gate.free == 1   # kept for the buffered interactive question
    h.start("i2", INTER)
    buffered[INTER] = 0
    await settle()
    assert h.order == ["i1", "i2"]
    await h.finish("i2")
    assert h.order == ["i1", "i2", "b1"]


async def test_a_kept_slot_goes_to_the_bulk_lane_when_the_buffered_question_never_comes():
    buffered = {INTER: 1, BULK: 0}
    gate = PriorityGate(1, recheck_seconds=0.01)
    gate.buffered = lambda lane: buffered[lane]
    h = Holders(gate)
    h.start("b1", BULK)
    await settle()
    assert h.order == []   # free, but held for the interactive question on its way
    await asyncio.sleep(0.05)
    assert h.order == ["b1"]
    await h.finish("b1")
    assert gate.free == 1


async def test_many_cancellations_lose_no_slot():
    gate = PriorityGate(3)
    h = Holders(gate)
    for i in range(30):
        h.start(f"{'i' if i % 3 else 'b'}{i}", INTER if i % 3 else BULK)
    await settle()
    for task in list(h.tasks.values())[5::2]:
        task.cancel()
    await settle()
    for name in list(h.tasks):
        if not h.tasks[name].done():
            h.done[name].set()
    await asyncio.gather(*h.tasks.values(), return_exceptions=True)
    assert gate.free == 3 and gate.waiting(INTER) == gate.waiting(BULK) == 0
    assert gate.snapshot()["in_use"] == 0
