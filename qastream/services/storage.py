"""The database as a Faust service: SQLAlchemy off the event loop, writes grouped.

SQLAlchemy's synchronous engine runs in threads so no database call blocks
the loop that serves HTTP and drives the agents.  All writes go through one
writer thread (SQLite allows one writer; PostgreSQL gains nothing from
racing ourselves) and acceptance of new questions is group-committed: the
questions that arrive while a commit runs go into the next one.

A write fails for one of two reasons, handled apart: the database refuses a
row (a value it cannot store, a constraint), which no wait can fix and which
must fail that row alone; or the database is unreachable, which the stages
wait out because nothing downstream can progress without it.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable, Generic, Optional, Sequence, TypeVar

from mode import Service
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from qastream.db import batches, inflight, keys, owners, queries, recent, totals, webhooks
from qastream.db.batcher import GroupCommitter
from qastream.db.migrate import upgrade
from qastream.db.queries import Acceptance, Failure, StoredAnswer, Submission
from qastream.errors import RowRejected
from qastream.policy.batches import BatchStatus, RequestCounts
from qastream.policy.webhooks import DeliveryState

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

#: Longest database reason kept with a rejected row (it can quote the whole statement).
MAX_REASON_CHARS = 500


def rejects_row(exc: BaseException) -> bool:
    """True when ``exc`` says the database refused a value of this write, not that it is unreachable.

    Refused: DataError (NUL on PostgreSQL, a value too long), IntegrityError,
    and a value the driver cannot encode (a lone surrogate: UnicodeEncodeError
    from sqlite3, ValueError for NUL from psycopg2, possibly wrapped in a
    StatementError).  Everything else, OperationalError and dropped
    connections first, is treated as an outage and waited out.
    """
    if isinstance(exc, DBAPIError):
        return isinstance(exc, (DataError, IntegrityError)) and not exc.connection_invalidated
    if isinstance(exc, StatementError):
        return isinstance(exc.orig, ValueError)
    return isinstance(exc, ValueError)


def storable(text: str) -> str:
    """``text`` with what no database column takes (NUL, lone surrogates) written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def rejection_reason(exc: BaseException) -> str:
    """The driver's one-line reason for a refused row, short and storable itself."""
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    message = " ".join(str(cause).split())
    return storable(f"{type(cause).__name__}: {message}")[:MAX_REASON_CHARS]


@dataclass(frozen=True)
class Rejection(Generic[T]):
    """An item the database refused on its own, and why."""

    item: T
    reason: str


async def write_isolated(write: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
                         items: Sequence[T]) -> tuple[list[R], list[Rejection[T]]]:
    """Write ``items`` in one call; if the database refuses that, write them one by one.

    Returns what ``write`` returned for the items written and the items the
    database refused on their own.  Any other failure propagates, for
    :func:`until_written` to wait out: the writes are idempotent, so doing
    the whole batch again after an outage is harmless.
    """
    try:
        return list(await write(items)), []
    except Exception as exc:
        if not rejects_row(exc):
            raise
        logger.warning("database refused a batch of %d row(s) (%s); writing them one by one",
                       len(items), rejection_reason(exc))
    written: list[R] = []
    rejected: list[Rejection[T]] = []
    for item in items:
        try:
            written.extend(await write([item]))
        except Exception as exc:
            if not rejects_row(exc):
                raise
            rejected.append(Rejection(item, rejection_reason(exc)))
    return written, rejected


def postgres_connect_args(url: str, connect_timeout: int, statement_timeout: Optional[float]) -> dict[str, Any]:
    """libpq options that bound every wait on PostgreSQL.

    ``connect_timeout`` bounds opening a connection (a blackholed host held
    requests ~2 min without it), ``statement_timeout`` bounds a query the
    server runs, and keepalives with ``tcp_user_timeout`` bound a connection
    whose peer vanished mid-query, which no server-side time-out can see.
    ``options`` already in the URL (a search_path) are kept.
    """
    limit = f"-c statement_timeout={max(1, round(statement_timeout * 1000))}" if statement_timeout else ""
    given = make_url(url).query.get("options", "")
    options = " ".join(filter(None, [given if isinstance(given, str) else " ".join(given), limit]))
    return {"connect_timeout": connect_timeout, "options": options, "keepalives": 1,
            "keepalives_idle": connect_timeout, "keepalives_interval": 1, "keepalives_count": 3,
            "tcp_user_timeout": connect_timeout * 1000}


def make_engine(url: str, *, connect_timeout: int = 5, statement_timeout: Optional[float] = None) -> Engine:
    """An engine for ``url`` with the settings qastream relies on.

    ``statement_timeout`` is for the worker, whose requests must answer in
    bounded time; commands (imports, migrations) run long statements on purpose.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # SQLite's ``timeout`` is how long a statement waits for another connection's lock.
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                   "timeout": statement_timeout or 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers (status, metrics) run while the writer commits.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    connect_args = postgres_connect_args(url, connect_timeout, statement_timeout) if url.startswith("postgres") else {}
    return create_engine(url, pool_size=8, max_overflow=4, pool_pre_ping=True, connect_args=connect_args)


async def until_written(write: Callable[[], Awaitable[T]], what: str, *, first_delay: float = 0.5,
                        max_delay: float = 30.0,
                        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    """Run ``write`` until it succeeds, backing off between attempts; a refused row is raised at once.

    The store and dead-letter stages batch with Faust's ``take()``, which
    acks the whole batch when the loop body raises: an exception there would
    drop the batch.  While the database is unreachable nothing downstream can
    progress anyway, so the stage waits for it instead.  A row the database
    refuses would be refused forever and hold up every question behind it:
    callers isolate those with :func:`write_isolated`.  ``sleep`` is the
    clock a test replaces to see the back-off without waiting it out.
    """
    delay = first_delay
    while True:
        try:
            return await write()
        except Exception as exc:
            if rejects_row(exc):
                raise
            logger.error("writing %s failed (%r); retrying in %.1f s", what, exc, delay)
            await sleep(delay)
            delay = min(delay * 2, max_delay)


def _select_one(connection: Any) -> None:
    connection.execute(text("SELECT 1"))


class Storage(Service):
    """Questions and answers of record."""

    def __init__(self, url: str, *, migrate: bool = True, connect_timeout: int = 5, statement_timeout: float = 10.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.migrate = migrate
        self.engine: Optional[Engine] = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qastream-db-write")
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="qastream-db-read")
        self._acceptor: Optional[GroupCommitter[Submission, Acceptance]] = None

    async def on_start(self) -> None:
        self.engine = make_engine(self.url, connect_timeout=self.connect_timeout,
                                  statement_timeout=self.statement_timeout)
        if self.migrate:
            await self._run(self._writer, self._upgrade)
        self._acceptor = GroupCommitter(self._accept_batch, isolate=rejects_row)
        self._acceptor.start()
        logger.info("storage ready at %s", self.engine.url.render_as_string(hide_password=True))

    async def on_stop(self) -> None:
        if self._acceptor is not None:
            await self._acceptor.stop()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        if self.engine is not None:
            self.engine.dispose()

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, partial(fn, *args))

    def _upgrade(self) -> None:
        # Without the statement time-out: a migration may rewrite a large table.
        engine = make_engine(self.url, connect_timeout=self.connect_timeout)
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        assert self.engine is not None
        with self.engine.begin() as connection:
            return fn(connection, *args)

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        assert self.engine is not None
        with self.engine.connect() as connection:
            return fn(connection, *args)

    async def _accept_batch(self, submissions: Sequence[Submission]) -> list[Acceptance]:
        return await self._run(self._writer, self._write, inflight.accept, submissions)

    async def accept(self, submission: Submission) -> Acceptance:
        """Persist a submission (group-committed) and say what it did.

        Raises :class:`RowRejected` when the database refuses this submission
        itself; the others of its batch are committed without it.
        """
        assert self._acceptor is not None, "storage is not started"
        try:
            return await self._acceptor.submit(submission)
        except Exception as exc:
            if not rejects_row(exc):
                raise
            reason = rejection_reason(exc)
            logger.warning("database refused question %s: %s", submission.question_id, reason)
            raise RowRejected(submission.question_id, reason) from exc

    async def save_completed(self, answers: Sequence[StoredAnswer]) -> list[StoredAnswer]:
        """Store answers in one transaction; returns the ones that were not stale."""
        return await self._run(self._writer, self._write, queries.save_completed, answers)

    async def save_failed(self, failures: Sequence[Failure]) -> list[Failure]:
        """Mark questions failed in one transaction; returns the ones that were not stale."""
        return await self._run(self._writer, self._write, queries.save_failed, failures)

    async def resubmit(self, now: float, **criteria: Any) -> list[Acceptance]:
        """Start a new epoch for matching questions (see :func:`queries.resubmit`)."""
        return await self._run(self._writer, self._write, partial(queries.resubmit, now=now, **criteria))

    async def pending_before(self, before: float, limit: int = 1000) -> list[str]:
        """Ids of pending questions accepted before ``before``."""
        return await self._run(self._readers, self._read, queries.pending_before, before, limit)

    async def ping(self) -> None:
        """Run ``SELECT 1``: raises when the database cannot be reached (for GET /health)."""
        await self._run(self._readers, self._read, _select_one)

    async def lookup(self, question_id: str) -> Optional[dict[str, Any]]:
        """A question's row with its result, or ``None``."""
        return await self._run(self._readers, self._read, queries.lookup, question_id)

    async def metrics(self) -> dict[str, Any]:
        """The running totals over all stored questions and answers (a few rows of ``stats``)."""
        return await self._run(self._readers, self._read, totals.read)

    async def throughput(self, now: float) -> dict[str, Any]:
        """Questions per minute accepted, completed and failed recently (see :mod:`qastream.db.recent`)."""
        return await self._run(self._readers, self._read, recent.throughput, now)

    async def latest_answers(self, limit: int, owner: Optional[int] = None) -> list[dict[str, Any]]:
        """The most recently stored answers, newest first (only key ``owner``'s questions, when given)."""
        return await self._run(self._readers, self._read, recent.latest_answers, limit, owner)

    async def key(self, key_hash: str) -> Optional[keys.Lookup]:
        """The API key with this hash, or ``None``."""
        return await self._run(self._readers, self._read, keys.lookup, key_hash)

    async def touch_key(self, key_id: int, now: float) -> None:
        """Record that a key was used (at most once a minute: :func:`keys.touch`)."""
        await self._run(self._writer, self._write, keys.touch, key_id, now)

    async def own_answered(self, key_id: int, question_id: str, at: float) -> None:
        """Record that the key asked a question the cache answered (see :func:`owners.record_answered`)."""
        await self._run(self._writer, self._write, owners.record_answered, key_id, question_id,
                        queries.to_datetime(at))

    async def owns(self, key_id: int, question_id: str) -> bool:
        """Whether the key asked the question."""
        return await self._run(self._readers, self._read, owners.owns, key_id, question_id)

    # -- batches and cancellation (qastream.db.batches) -------------------------------------------
    async def create_batch(self, batch: batches.NewBatch, distinct: int, bound: Optional[int]) -> bool:
        """Create a batch unless it would take its key past ``bound`` (see :func:`batches.create_within`)."""
        return await self._run(self._writer, self._write, batches.create_within, batch, distinct, bound)

    async def accept_batch_items(self, batch_id: str, items: Sequence[batches.Item]) -> list[Acceptance]:
        """Accept a chunk of a batch's questions and record its items, in one transaction."""
        return await self._run(self._writer, self._write, batches.accept_items, batch_id, items)

    async def shrink_batch(self, batch_id: str) -> int:
        """Make the batch's total the items it holds (after a failed acceptance); the new total."""
        return await self._run(self._writer, self._write, batches.shrink, batch_id)

    async def batch(self, batch_id: str) -> Optional[batches.Batch]:
        """The batch, or ``None``."""
        return await self._run(self._readers, self._read, batches.get, batch_id)

    async def batch_counts(self, batch: batches.Batch) -> RequestCounts:
        """The batch's request counts, folded from its questions."""
        return await self._run(self._readers, self._read, batches.counts, batch)

    async def batch_results(self, batch_id: str, after_line: int, limit: int) -> list[dict[str, Any]]:
        """A page of the batch's result lines after ``after_line``."""
        return await self._run(self._readers, self._read, batches.results, batch_id, after_line, limit)

    async def latest_batches(self, limit: int, owner: Optional[int] = None) -> list[batches.Batch]:
        """The newest batches (only key ``owner``'s, when given)."""
        return await self._run(self._readers, self._read, batches.latest, limit, owner)

    async def cancel_batch(self, batch_id: str, now: float) -> tuple[Optional[batches.Batch], list[batches.Cancelled]]:
        """Cancel a batch and its pending questions (idempotent)."""
        return await self._run(self._writer, self._write, batches.cancel, batch_id, now)

    async def cancel_questions(self, question_ids: Sequence[str], now: float) -> list[batches.Cancelled]:
        """Cancel the pending questions among ``question_ids``."""
        return await self._run(self._writer, self._write, batches.cancel_questions, question_ids, now)

    async def finish_batch(self, batch: batches.Batch, new: BatchStatus, now: float) -> bool:
        """End a batch once (a conditional update); False when another worker ended it first."""
        return await self._run(self._writer, self._write, batches.finish, batch, new, now)

    async def unfinished_batches(self, limit: int) -> list[batches.Batch]:
        """Batches not finished yet, oldest first."""
        return await self._run(self._readers, self._read, batches.unfinished, limit)

    async def unnotified_batches(self, limit: int) -> list[batches.Batch]:
        """Finished batches whose end-of-batch hook has not completed."""
        return await self._run(self._readers, self._read, batches.unnotified, limit)

    async def mark_batch_notified(self, batch_id: str, now: float) -> None:
        """Record that the end-of-batch hook ran."""
        await self._run(self._writer, self._write, batches.mark_notified, batch_id, now)

    async def batched(self, question_ids: Sequence[str]) -> set[str]:
        """Those of the questions that some batch asked (see :func:`batches.batched`)."""
        return await self._run(self._readers, self._read, batches.batched, question_ids)

    async def question_status(self, question_id: str) -> Optional[str]:
        """The question's status in the database, or ``None``."""
        return await self._run(self._readers, self._read, batches.question_status, question_id)

    async def is_cancelled(self, question_id: str, epoch: int) -> bool:
        """Whether the question was cancelled in ``epoch``."""
        return await self._run(self._readers, self._read, batches.is_cancelled, question_id, epoch)

    # -- webhooks (qastream.db.webhooks) ----------------------------------------------------------
    async def insert_deliveries(self, deliveries: Sequence[webhooks.NewDelivery]) -> list[tuple[webhooks.Delivery, bool]]:
        """Insert webhook deliveries not there yet (see :func:`webhooks.insert`)."""
        return await self._run(self._writer, self._write, webhooks.insert, deliveries)

    async def claim_delivery(self, delivery_id: str, attempt: int, at: float) -> bool:
        """Start attempt ``attempt`` of a delivery unless it is done or was made (see :func:`webhooks.claim`)."""
        return await self._run(self._writer, self._write, webhooks.claim, delivery_id, attempt, at)

    async def record_delivery(self, delivery_id: str, attempt: int, state: DeliveryState, status: Optional[int],
                              error: Optional[str], at: float) -> bool:
        """Record how a claimed attempt went (see :func:`webhooks.record`)."""
        return await self._run(self._writer, self._write, webhooks.record, delivery_id, attempt, state, status,
                               error, at)

    async def take_stale_deliveries(self, before: float, now: float, limit: int) -> list[webhooks.Delivery]:
        """Pending deliveries whose message was lost, taken by this worker (see :func:`webhooks.take_stale`)."""
        return await self._run(self._writer, self._write, webhooks.take_stale, before, now, limit)

    async def deliveries_of(self, subject_id: str, kind: Optional[str] = None) -> list[webhooks.Delivery]:
        """The webhook deliveries of a subject (a batch or question id)."""
        return await self._run(self._readers, self._read, webhooks.of_subject, subject_id, kind)

    async def webhook_targets(self, question_ids: Sequence[str]) -> dict[str, str]:
        """Question id -> ``webhook_url`` for those of ``question_ids`` that have one."""
        return await self._run(self._readers, self._read, webhooks.targets, question_ids)
