"""Group commit: many concurrent callers, one database transaction.

Each ``POST /query`` must persist its question before it answers 202, but a
transaction per request would cap acceptance at the database's commit rate.
:class:`GroupCommitter` gives each caller its own future and flushes whatever
is waiting in one call as soon as the previous flush returns: no timer, so an
idle system answers at once and a busy one batches naturally.

Sharing a transaction must not mean sharing a failure: one caller's item
that the database rejects would otherwise fail every caller of its batch
(30 poisoned requests in 300 turned 268 good ones into 503s).  A batch whose
failure ``isolate`` recognises as one item's fault is flushed again item by
item, so only the items that fail alone get an error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Generic, Optional, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger(__name__)


class GroupCommitter(Generic[T, R]):
    """Collects items from concurrent ``submit`` calls and flushes them in batches.

    ``flush`` receives the batch and returns one result per item, in order.
    If it raises an exception for which ``isolate`` is true, each item is
    flushed again on its own and each caller gets its own result or error;
    any other exception (the database is down: retrying item by item would
    only multiply the waiting) reaches every caller of the batch.
    """

    def __init__(self, flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]], max_batch: int = 500,
                 isolate: Callable[[Exception], bool] = lambda exc: False) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._isolate = isolate
        self._waiting: list[tuple[T, asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._task: Optional[asyncio.Task] = None
        self._stopping = False

    def start(self) -> None:
        """Start the flushing task on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Flush everything submitted so far, then stop.

        The loop is asked to finish rather than cancelled: cancelling it in
        the middle of a flush would leave that batch's callers waiting forever.
        """
        if self._task is None:
            return
        self._stopping = True
        self._wakeup.set()
        await self._task
        self._task = None

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for the result of the flush that carries it."""
        if self._task is None or self._stopping:
            raise RuntimeError("GroupCommitter is not running")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                await self._flush_some()

    async def _flush_some(self) -> None:
        batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch:]
        try:
            results = await self._flush([item for item, _ in batch])
        except Exception as exc:
            logger.warning("group commit of %d item(s) failed: %r", len(batch), exc)
            if len(batch) > 1 and self._isolate(exc):
                await self._flush_one_by_one(batch)
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)

    async def _flush_one_by_one(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        """Each item in its own flush; stop isolating once a failure is not an item's own."""
        for index, (item, future) in enumerate(batch):
            try:
                (result,) = await self._flush([item])
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                if not self._isolate(exc):
                    for _, rest in batch[index + 1:]:
                        if not rest.done():
                            rest.set_exception(exc)
                    return
                continue
            if not future.done():
                future.set_result(result)
