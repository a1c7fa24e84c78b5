"""Fixes for Faust and aiokafka: the commit stall after a restart with a backlog (faust-streaming
#606); the table and router views' 5xx for a table name that does not exist; for a broker
that lost its topics, aiokafka's endless commit retry on them and their auto-creation; and the
fetch wait Faust hard-codes (:func:`create_worker_consumer`).  The seek that ends a rebalance
has its own module, :mod:`qastream.streaming.recovery_seek`.

``Consumer._new_offset`` merges offset gaps (records the broker skipped)
into the list of acked offsets.  When a gap overlaps offsets that were
already acked, they are added a second time; ``consecutive_numbers`` then
stops at the first duplicate, so each commit advances only a few offsets,
the committed position falls far behind what was processed, and the next
restart replays about a thousand events (DESIGN §4, item 3).

The fix is the one measured in DESIGN: drop duplicates before looking for
the first run of consecutive offsets.  It is applied by replacing the
method with :func:`new_offset`, which is Faust 0.15.3's own code plus that
one step; :func:`install` refuses to patch any other Faust version, so an
upgrade is a conscious decision.  Redelivery stays harmless either way
(every stage is idempotent), this only keeps it rare and cheap.

The same method could also commit past a message still being processed,
which is worse: after a ``kill -9`` that message is never delivered again.
Faust's check that the run of acked offsets starts at the committed offset
is off by one (the committed offset is the next one to read, and the run
may start one after it), is skipped before the first commit, and a gap can
cover a message in flight.  With ``concurrency`` actors finishing out of
order, the generate stage's LLM calls in flight were committed past in
about one kill in two: their questions stalled at ``generating`` until
reconciliation gave them a new epoch.  :func:`new_offset` therefore never
commits past the lowest offset delivered to a stream and not yet acked.

Faust's ``/table/{name}/{key}/``, ``/router/{name}/`` and
``/router/{name}/{key}/`` look the name up in the partition assignor, whose
``KeyError`` they turn into a 503 (or let through as a 500): a client's typo
looked like an outage worth retrying.  :func:`known_table` answers 404 first.

The two others (:func:`do_commit_offsets`, :func:`metadata_request_init`)
patch aiokafka, guarded by its version the same way; their docstrings say
what the development broker restarting empty did without them (issue 11).
"""

from __future__ import annotations

import logging
from functools import wraps
from typing import Any, Awaitable, Callable, Iterable, List, Mapping, Optional

import aiokafka
import faust
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import UnknownTopicOrPartitionError
from aiokafka.protocol.metadata import MetadataRequest
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from faust.utils.functional import consecutive_numbers
from faust.web.apps import router as router_views
from faust.web.apps import tables as table_views
from faust.web.exceptions import NotFound

from qastream.streaming import recovery_seek

logger = logging.getLogger(__name__)

PATCHED_FAUST_VERSION = "0.15.3"
PATCHED_AIOKAFKA_VERSION = "0.14.0"

#: Faust's own method, kept so tests can show the stall it causes.
original_new_offset = Consumer._new_offset
#: aiokafka's own method, wrapped by :func:`do_commit_offsets`.
original_do_commit_offsets = GroupCoordinator._do_commit_offsets
#: aiokafka's own constructor, wrapped by :func:`metadata_request_init`.
original_metadata_request_init = MetadataRequest.__init__
#: Faust's own consumer factory, wrapped by :func:`create_worker_consumer`.
original_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


def lowest_unacked(self: Any) -> dict[TP, int]:
    """Per partition, the lowest offset delivered to a stream and not acked yet, at or past the committed offset.

    One pass over the messages in flight serves every partition of a commit
    (:func:`filter_committable_offsets`): they can number tens of thousands
    with a backlog, and a commit looks at every partition of the worker.
    """
    heads: dict[TP, int] = {}
    for m in list(self._unacked_messages):
        if m.acked:
            continue
        committed = self._committed_offset.get(m.tp)
        if (committed is None or m.offset >= committed) and m.offset < heads.get(m.tp, m.offset + 1):
            heads[m.tp] = m.offset
    return heads


def filter_committable_offsets(self: Any, tps: Iterable[TP]) -> dict[TP, int]:
    """Faust 0.15.3's choice of the offsets to commit, finding the messages in flight once for all ``tps``."""
    heads = lowest_unacked(self)
    commit_offsets = {}
    for tp in tps:
        offset = new_offset(self, tp, heads)
        if offset is not None and self._should_commit(tp, offset):
            commit_offsets[tp] = offset
    return commit_offsets


def new_offset(self: Any, tp: TP, heads: Optional[Mapping[TP, int]] = None) -> Optional[int]:
    """The offset to commit for ``tp``: one past the first run of consecutive acked offsets,
    and never past a message that is still being processed (``heads``: :func:`lowest_unacked`, found here
    when not given)."""
    acked = self._acked[tp]
    if acked:
        max_offset = max(acked)
        gap_for_tp = self._gap[tp]
        if gap_for_tp:
            candidates = gap_for_tp.overlap(0, max_offset)
            sorted_candidates = sorted(candidates, key=lambda x: x.begin)
            if sorted_candidates:
                stuff_to_add: List[int] = []
                for entry in sorted_candidates:
                    stuff_to_add.extend(range(entry.begin, entry.end))
                new_max_offset = max(stuff_to_add[-1], max_offset + 1)
                acked.extend(stuff_to_add)
                gap_for_tp.chop(0, new_max_offset)
        # The fix: a gap can overlap offsets already acked; duplicates would
        # cut the consecutive run short at the first repeated offset.
        acked[:] = sorted(set(acked))
        committed_offset = self._committed_offset[tp]
        if committed_offset:
            if min(acked) - committed_offset > 1:
                return None
        batch = next(consecutive_numbers(acked))
        # The second fix: the run need not start at the committed offset (the next one to read).  Faust
        # lets it start one later, and anywhere before the first commit, and a gap can cover the offset
        # of a message being processed; the message in flight there was committed past and a kill -9
        # lost it (its question stalled until its stage deadline).  A record delivered twice (the seek
        # at the end of recovery re-reads one) is acked by the copy a stage skips while the first copy
        # is still being processed, so the run is checked against the messages in flight every time.
        head = (lowest_unacked(self) if heads is None else heads).get(tp)
        if head is not None and head <= batch[-1]:
            batch = [offset for offset in batch if offset < head]
            if not batch:
                return None
        acked[: len(batch)] = []
        self._acked_index[tp].difference_update(batch)
        return batch[-1] + 1
    return None


ViewGet = Callable[..., Awaitable[Any]]

#: Faust views that take a table ``name`` and fail with a 5xx when it is no table.
NAMED_TABLE_VIEWS = (table_views.TableKeyDetail, router_views.TableDetail, router_views.TableKeyDetail)


def known_table(get: ViewGet) -> ViewGet:
    """``get`` of a Faust view, answering 404 for a ``name`` that is not one of the app's tables."""

    @wraps(get)
    async def checked(self: Any, request: Any, name: str, **kwargs: Any) -> Any:
        if name not in self.app.tables:
            raise NotFound("unknown table", name=name)
        return await get(self, request, name=name, **kwargs)

    checked.checks_table_name = True  # type: ignore[attr-defined]
    return checked



async def do_commit_offsets(self: Any, assignment: Any, offsets: Any) -> None:
    """aiokafka's offset commit, except that a partition the broker does not know is given up.

    ``UnknownTopicOrPartitionError`` is retriable for aiokafka, and
    ``GroupCoordinator.commit_offsets`` retries it every 100 ms with no end.
    When the memory-only development broker restarts empty, the commit Faust
    makes on revoking partitions hits exactly that: 17,460 failed commits
    over 5 minutes, with the rebalance (and so every stage) blocked behind
    them.  Offsets of a topic the broker lost mean nothing any more (a
    re-created topic starts at 0); a transient error on Kafka costs at most
    one skipped commit, redelivery being harmless (every stage is idempotent).
    The other partitions of the request were committed or failed on their own.
    """
    try:
        await original_do_commit_offsets(self, assignment, offsets)
    except UnknownTopicOrPartitionError:
        logger.warning("offset commit: the broker does not know some of %d partition(s) (did it lose its "
                       "topics?); not retrying those offsets", len(offsets))


def metadata_request_init(self: Any, topics: Optional[list[str]] = None,
                          allow_auto_topic_creation: Optional[bool] = None) -> None:
    """A metadata request that never asks the broker to create the topics it names.

    aiokafka asks for auto-creation by default, so the first metadata request
    for a topic the broker lost (a producer retrying a batch, the consumer
    refreshing its subscription) re-creates it with the broker's default
    partition count -- 4 on Tansu -- and co-partitioning is broken before any
    check can run.  Without it, a lost topic stays missing until the worker
    creates it with its configured count (qastream.streaming.topic_admin); the
    producer's batches wait for it and then go to the partitions they were
    meant for.  Faust creates its changelog topics with CreateTopics, not by
    auto-creation, so nothing else depends on it.
    """
    original_metadata_request_init(self, topics, False if allow_auto_topic_creation is None
                                   else allow_auto_topic_creation)


def create_worker_consumer(self: Any, transport: Any) -> Any:
    """Faust's worker consumer, with the fetch wait of the app (``QASTREAM_FETCH_MAX_WAIT_SECONDS``).

    Faust passes ``fetch_max_wait_ms=1500`` to aiokafka with no setting to
    change it: how long the broker may hold a fetch that finds no new data.
    Kafka answers such a fetch as soon as data arrives, so there it only sets
    how often an idle consumer asks.  Tansu holds it for the whole wait, and
    aiokafka has one fetch in flight per broker, so a message produced to a
    quiet partition waited for the fetch in flight to time out: 0.5-0.6 s
    per hop between stages, and a question with a 1 s LLM took 2.4-2.5 s
    from POST /query to its stored answer.  With 0.1 s it took 1.1-1.2 s
    (measured on the development stack, one worker, no load).
    """
    consumer = original_create_worker_consumer(self, transport)
    wait = getattr(self.app, "fetch_max_wait", None)
    if wait is not None:
        consumer._fetch_max_wait_ms = int(wait * 1000)
    return consumer


def install() -> None:
    """Install the fixes on the library versions they were written for (idempotent)."""
    if faust.__version__ != PATCHED_FAUST_VERSION:
        raise RuntimeError(f"qastream.streaming.faust_fixes targets faust-streaming {PATCHED_FAUST_VERSION}, "
                           f"found {faust.__version__}: re-check faust-streaming #606 and update the fix")
    if aiokafka.__version__ != PATCHED_AIOKAFKA_VERSION:
        raise RuntimeError(f"qastream.streaming.faust_fixes targets aiokafka {PATCHED_AIOKAFKA_VERSION}, found "
                           f"{aiokafka.__version__}: re-check GroupCoordinator.commit_offsets and update the fix")
    # Replacing library methods is what this module is for.
    Consumer._new_offset = new_offset  # type: ignore[method-assign]
    Consumer._filter_committable_offsets = filter_committable_offsets  # type: ignore[method-assign]
    GroupCoordinator._do_commit_offsets = do_commit_offsets
    MetadataRequest.__init__ = metadata_request_init
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
    recovery_seek.install()
    for view in NAMED_TABLE_VIEWS:
        if not getattr(view.get, "checks_table_name", False):
            view.get = known_table(view.get)  # type: ignore[method-assign,assignment]
