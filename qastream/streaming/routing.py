"""Which partition a key lands on, as the producer computes it, and forwarding a request to its owner.

The producer's partitioner needs the topic's partition count in its
metadata, which it only loads for topics it has produced to.  A worker that
has not yet written to a table's changelog (or was just restarted) has none,
and ``table_route`` then fails; :func:`ensure_metadata` loads it first.
Once loaded it returns at once.
"""

from __future__ import annotations

from typing import Optional

from faust import web
from faust.web.exceptions import ServiceUnavailable
from yarl import URL

from qastream.app import app

#: Headers of the owning worker's answer that reach the client: a 429's ``Retry-After`` and a 401's
#: challenge.  Faust's own ``table_route`` forwards status and body only.
PASSED_BACK = ("Retry-After", "WWW-Authenticate")


async def ensure_metadata(topic_name: str) -> None:
    """Load ``topic_name``'s partition count into the producer's metadata."""
    await app.producer._ensure_producer().partitions_for(topic_name)  # type: ignore[attr-defined]


async def partition_of(topic_name: str, key: str) -> int:
    """The partition of ``topic_name`` that raw ``key`` hashes to."""
    await ensure_metadata(topic_name)
    return app.producer.key_partition(topic_name, key.encode()).partition


def same_worker(a: URL, b: URL) -> bool:
    """Whether two worker URLs name the same web server (host and port)."""
    return (a.host, a.port) == (b.host, b.port)


def owner_of(table_name: str, key: str) -> Optional[URL]:
    """The URL of the worker owning ``key`` in ``table_name``, or ``None`` when it is this one.

    The partition is that of the raw key, as the stages send it to the
    events topic, so the owner is the worker whose ``track`` writes the key.
    Faust's ``app.router.key_store`` hashes the key as the changelog topic
    serialises it, JSON (``"..."``): for about two keys in three that named
    another partition, whose worker answered from its standby copy, a little
    behind and never told of a change (DESIGN §4, key routing).
    Raises Faust's ``ServiceUnavailable`` (a 503) while no worker owns it (a rebalance).
    """
    topic_name = app.tables[table_name].changelog_topic.get_topic_name()
    try:
        owner = app.assignor.key_store(topic_name, key.encode())
    except KeyError:  # no assignment yet (rebalancing)
        raise ServiceUnavailable() from None
    return None if same_worker(owner, URL(str(app.conf.canonical_url))) else owner


async def forwarded(view: web.View, request: web.Request, table_name: str, key: str) -> Optional[web.Response]:
    """The answer of the worker owning ``key`` in ``table_name``, or ``None`` when it is this one.

    As Faust's ``table_route`` does, the request goes on with the client's
    headers (the owner checks the key again); unlike it, the owner's
    :data:`PASSED_BACK` headers come back with its status and body, so a
    429 keeps its ``Retry-After``.  Bounded by the HTTP client's
    ``forward_timeout_seconds``.
    """
    owner = owner_of(table_name, key)
    if owner is None:
        return None
    url = request.url.with_host(owner.host or "").with_port(owner.port)
    async with app.http_client.request(method=request.method, headers=request.headers, url=url) as response:
        body = await response.read()
        headers = {name: response.headers[name] for name in PASSED_BACK if name in response.headers}
        return view.bytes(body, content_type=response.content_type, status=response.status, headers=headers)
