"""Who follows which question live: the registry ``track`` tells of every status change it applies.

``track`` is the status table's only writer, so after it folds an event it
hands the new record to the :class:`Mailbox` of every live status stream
of that question on this worker (:meth:`Watchers.publish`).  Handing over
never waits: a mailbox holds at most ``depth`` updates and drops the
oldest when a slow client lets them pile up, so a client that does not
read slows nobody but itself, loses intermediate stages only, and always
gets the latest state (the terminal one is the last update there is).

The registry also bounds how many streams a worker holds open at once
(served here or relayed to the worker owning the question) and closes them
all when the web server shuts down: an open stream would otherwise hold
the worker's stop for as long as the server waits for its handlers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

from qastream.policy.admission import Gate
from qastream.policy.lifecycle import AttemptCounts, StatusRecord

#: Updates a stream may have pending.  A question changes status a handful of times per attempt, so a
#: client keeping up never loses one; one that does not loses the oldest.
DEPTH = 16


@dataclass(frozen=True)
class Update:
    """A status record as ``track`` just wrote it, with the question's attempt counts at that moment."""

    record: StatusRecord
    attempts: Optional[AttemptCounts]


class Mailbox:
    """The updates one stream has not sent yet: the newest ``depth``, in the order ``track`` applied them."""

    def __init__(self, depth: int = DEPTH) -> None:
        self._pending: deque[Update] = deque(maxlen=depth)
        self._arrived = asyncio.Event()
        #: Set when the worker stops: the stream ends at once.
        self.closed = False
        #: Updates dropped because the stream fell ``depth`` behind.
        self.dropped = 0

    def put(self, update: Update) -> None:
        """Keep ``update``, dropping the oldest pending one when full; never waits."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(update)
        self._arrived.set()

    def close(self) -> None:
        """End the stream: :meth:`get` answers ``None`` from now on."""
        self.closed = True
        self._arrived.set()

    async def get(self, timeout: float) -> Optional[Update]:
        """The oldest pending update; ``None`` after ``timeout`` seconds without one, or once closed."""
        if not self._pending and not self.closed:
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                return None
        if self.closed or not self._pending:
            return None
        return self._pending.popleft()


class Watchers:
    """This worker's live status streams: a mailbox per stream by question, and their bound."""

    def __init__(self, limit: int, depth: int = DEPTH) -> None:
        #: Streams open at once (served or relayed); past its limit a new one is refused with a 503.
        self.gate = Gate(limit)
        self.depth = depth
        self._by_question: dict[str, set[Mailbox]] = {}
        #: Streams this worker relays from the owner of their question: they have no mailbox to close.
        self.relays: set[asyncio.Task[object]] = set()

    @contextmanager
    def watching(self, question_id: str) -> Iterator[Mailbox]:
        """A mailbox that receives ``question_id``'s updates while the block runs."""
        mailbox = Mailbox(self.depth)
        self._by_question.setdefault(question_id, set()).add(mailbox)
        try:
            yield mailbox
        finally:
            boxes = self._by_question.get(question_id)
            if boxes is not None:
                boxes.discard(mailbox)
                if not boxes:
                    del self._by_question[question_id]

    @contextmanager
    def relaying(self) -> Iterator[None]:
        """Count the current task as a relayed stream while the block runs, so :meth:`close_all` can end it."""
        task = asyncio.current_task()
        if task is not None:
            self.relays.add(task)
        try:
            yield
        finally:
            if task is not None:
                self.relays.discard(task)

    def publish(self, question_id: str, update: Update) -> None:
        """Hand ``update`` to every stream of ``question_id`` (called by ``track``; never waits)."""
        for mailbox in self._by_question.get(question_id, ()):
            mailbox.put(update)

    def close_all(self) -> None:
        """End every stream: the served ones after their last write, the relayed ones at once."""
        for boxes in self._by_question.values():
            for mailbox in boxes:
                mailbox.close()
        for task in self.relays:
            task.cancel()
