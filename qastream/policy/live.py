"""Live status: which Server-Sent Event a status change is, its id, and whether a client already has it.

``GET /status/{id}/events`` sends one event per change of a question's
status record (:mod:`qastream.policy.lifecycle`).  The event is named for
the record's stage, as users read it, and its id is the record's version,
which only grows (the fold never moves a question backwards): a stream
sends a change only when its version is past the last one sent, so a
redelivered event or an update already covered by the first snapshot is
never sent twice, and a client reconnecting with ``Last-Event-ID`` gets
only what it has not seen.

A question that finished and left the status table is known from its
database row, which holds its epoch and status but no attempt or stage:
the row stands for the first event of that status in the epoch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from qastream.policy.lifecycle import STAGE_RANK, STAGE_STATE, TERMINAL, Stage, StatusRecord, Version

#: Event names that differ from their stage: a parked retry is what users know as ``retrying``.
RENAMED: dict[str, str] = {Stage.WAITING_RETRY: "retrying"}

#: Ranks of the stages that end a question; read from the lifecycle so a terminal stage added there counts.
TERMINAL_RANKS = frozenset(STAGE_RANK[stage] for stage, state in STAGE_STATE.items() if state in TERMINAL)

#: An event id: four numbers, each short enough that parsing one is cheap whatever a client sends.
EVENT_ID = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9}){3}")


@dataclass(frozen=True)
class Change:
    """One event of a live status stream: its name, version, whether it ends the stream, and its data."""

    name: str
    version: Version
    terminal: bool
    body: Mapping[str, Any]

    @property
    def id(self) -> str:
        """The event's ``id:``, the version as ``epoch.attempt.retries.rank``."""
        return ".".join(str(part) for part in self.version)


def event_name(stage: str) -> str:
    """The event a stage is announced as (``waiting_retry`` → ``retrying``; the others keep their name)."""
    return RENAMED.get(stage, str(stage))


def record_change(record: StatusRecord, body: Mapping[str, Any]) -> Change:
    """The event of a status-table record, ``body`` being what ``GET /status`` shows for it."""
    version = tuple(record["version"])
    return Change(event_name(record["stage"]), (version[0], version[1], version[2], version[3]),
                  record["state"] in TERMINAL, body)


def stage_of_status(status: str) -> str:
    """The stage a database row's status stands for: the first stage of that state (``pending`` → ``queued``).

    A status no stage has (a row written by a newer version) stands for itself.
    """
    return next((stage for stage, state in STAGE_STATE.items() if state == status), status)


def row_change(row: Mapping[str, Any], body: Mapping[str, Any]) -> Change:
    """The event of a database row (``GET /status``'s ``"source": "database"`` answer is ``body``).

    A pending row gets the version of the first ``queued`` event of its
    epoch, so the status table's own ``queued`` that follows is not sent again.
    """
    stage = stage_of_status(row["status"])
    version = (int(row["epoch"]), 1, 0, STAGE_RANK.get(stage, 0))
    return Change(event_name(stage), version, row["status"] in TERMINAL, body)


def parse_event_id(raw: Optional[str]) -> Optional[Version]:
    """The version a ``Last-Event-ID`` header names; ``None`` for none or anything else (then it is ignored)."""
    if raw is None or not EVENT_ID.fullmatch(raw.strip()):
        return None
    a, b, c, d = (int(part) for part in raw.strip().split("."))
    return (a, b, c, d)


def is_news(change: Change, last: Optional[Version]) -> bool:
    """Whether a client whose last event was ``last`` has not yet seen ``change``.

    A terminal change is news unless the client already has a terminal
    event of the same epoch or later: a database row's version is only an
    approximation, but nothing follows the end of an epoch.
    """
    if last is None:
        return True
    if change.terminal:
        return last[3] not in TERMINAL_RANKS or change.version[0] > last[0]
    return change.version > last
