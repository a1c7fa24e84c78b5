"""Faust options per broker profile (DESIGN §4).

The development profile carries the settings measured as necessary on the
embedded Tansu broker; the production profile (Apache Kafka) leaves them out,
because they cost throughput (one record per batch) or are below Kafka's
minimums (a 2 s session).
"""

from __future__ import annotations

import math
import os
from functools import partial
from typing import Any

import faust
from aiohttp import ClientSession, ClientTimeout

from qastream.settings import Settings
from qastream.streaming.poison import QAStreamTopic

#: Tansu answers ListOffsets with the last batch's first offset + 1, so a batch
#: of several records makes changelog recovery under-read: one record per batch.
TANSU_PRODUCER_MAX_BATCH_SIZE = 16
#: Seconds a produce batch is retried before it expires (Faust's default is 20 minutes).  When
#: the memory-only broker restarts empty, a batch appended before the restart could hold the
#: producer flush Faust runs before every commit -- and so the rebalance and every stage -- for
#: minutes (issue 11).  Expired, its message is lost like the rest of the broker's content, and
#: reconciliation re-enqueues its question (qastream.policy.deadlines).
TANSU_PRODUCER_REQUEST_TIMEOUT = 30.0


#: Faust stops fetching a partition when its stream buffer holds this fraction of its size
#: (mode's ``FlowControlQueue.pressure_high_ratio``: the size divided by 1.25).
PRESSURE_HIGH_FRACTION = 1 / 1.25


def max_poll_records(settings: Settings) -> int:
    """Records one fetch hands to Faust's streams: few enough that no stream buffer can fill up.

    Faust delivers fetched records one at a time, and the delivery waits when
    the receiving stream's buffer is full; the whole fetch loop waits with it,
    for every topic (``faust.transport.conductor``: ``await chan.put`` inside
    the consumer's ``_drain_messages``).  With thousands of bulk questions
    queued, the bulk stream's buffer is the one that fills, and it drains
    only as fast as the LLM answers bulk questions (one slot at a time, and
    only when no interactive question waits), so an interactive question
    fetched behind it would wait minutes before it even reached its stream.

    Faust's own guard stops fetching a partition once its stream buffer
    reaches :data:`PRESSURE_HIGH_FRACTION` of its size, but the records
    already fetched are still delivered: up to a whole fetch (aiokafka hands
    over everything it prefetched when ``max_poll_records`` is unset, about
    a megabyte per partition), and one more fetch for each partition that
    had nothing in the fetch that crossed the mark.  Bounding each fetch to
    the headroom above the mark divided by (partitions + 1) keeps the buffer
    from ever filling, so the bulk stream's partitions pause instead of
    blocking.  At 4,096 and 3 partitions that is 205 records a fetch, which
    costs nothing measurable at the ~1,700 records/s a worker moves.
    """
    size = settings.stream_buffer_maxsize
    headroom = size - math.floor(size * PRESSURE_HIGH_FRACTION)
    partitions = max(value for name, value in vars(settings).items() if name.startswith("partitions_"))
    return max(1, headroom // (partitions + 1))


def faust_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``faust.App`` for ``settings``."""
    options: dict[str, Any] = {
        "broker": settings.broker_url,
        "store": "memory://",
        "processing_guarantee": "at_least_once",
        # Raw keys on every topic: stages and the routing of requests to the owning worker
        # (streaming.routing.owner_of) must hash the same bytes or a request silently reads a stale standby.
        "key_serializer": "raw",
        "value_serializer": "json",
        "topic_partitions": settings.partitions_events,
        "stream_buffer_maxsize": settings.stream_buffer_maxsize,
        "broker_max_poll_records": max_poll_records(settings),
        "table_standby_replicas": 1,
        "Topic": QAStreamTopic,
        "web_host": settings.web_host,
        "web_bind": settings.web_host,
        "web_port": settings.web_port,
        "canonical_url": f"http://{settings.web_host}:{settings.web_port}",
        "datadir": os.path.join(settings.data_dir, f"faust-{settings.web_port}"),
        # table_route forwards a request to the owning worker with this client: bounded, so a stalled
        # owner costs a 503, not a request held for aiohttp's default of five minutes.
        "HttpClient": partial(ClientSession, timeout=ClientTimeout(total=settings.forward_timeout_seconds)),
    }
    if settings.broker_profile == "development":
        options.update(
            producer_max_batch_size=TANSU_PRODUCER_MAX_BATCH_SIZE,
            producer_request_timeout=TANSU_PRODUCER_REQUEST_TIMEOUT,
            # Tansu holds JoinGroup for session/2: a short session makes restarts take seconds.
            broker_session_timeout=2.0,
            broker_heartbeat_interval=0.5,
        )
    else:
        options.update(broker_session_timeout=10.0, broker_heartbeat_interval=3.0)
    return options


def table_options(settings: Settings, partitions: int) -> dict[str, Any]:
    """Keyword arguments of a qastream table whose changelog has ``partitions`` partitions."""
    # Standbys apply changelog records in blocks of this size; a small block
    # keeps a standby (and so a failover) close to the active copy.
    standby = 1 if settings.broker_profile == "development" else 100
    schema: faust.Schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")
    return {"schema": schema, "partitions": partitions, "standby_buffer_size": standby}
