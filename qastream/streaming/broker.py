"""Faust options per broker profile (DESIGN §4).

The development profile carries the settings measured as necessary on the
embedded Tansu broker; the production profile (Apache Kafka) leaves them out,
because they cost throughput (one record per batch) or are below Kafka's
minimums (a 2 s session).
"""

from __future__ import annotations

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
