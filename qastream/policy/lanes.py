"""Lanes: interactive questions and bulk (batch) questions, and which one the LLM serves first.

A question asked through ``POST /query`` has someone waiting for the answer;
a question of a batch of thousands has someone waiting for the whole batch.
Both go through the same graph, but each lane enters it through its own
topic (``questions-pending`` and the bulk topic, :meth:`qastream.topics.Topics.intake`)
so that thousands of bulk questions never sit in front of an interactive one
in a partition, and the generate stage takes LLM slots for them from one
:class:`~qastream.policy.priority.PriorityGate` that serves the lanes in
:data:`PRIORITY` order.  A question keeps its lane for its whole life: its
retries and regenerations go back to its lane's topic.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Optional


class Lane(StrEnum):
    """The lane of a question (``Job.lane``; a plain string on the wire)."""

    INTERACTIVE = "interactive"
    BULK = "bulk"


#: Lanes in the order a free LLM slot serves them: a waiting interactive question always goes first.
PRIORITY: tuple[Lane, ...] = (Lane.INTERACTIVE, Lane.BULK)


def lane_of(value: Optional[str]) -> Lane:
    """The lane a wire or table value names; anything else (a message written before lanes existed,
    ``None``) is interactive, the lane every question had then."""
    try:
        return Lane(value or Lane.INTERACTIVE)
    except ValueError:
        return Lane.INTERACTIVE
