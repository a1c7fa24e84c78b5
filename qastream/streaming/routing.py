"""Which partition a key lands on, as the producer (and so ``table_route``) computes it.

The producer's partitioner needs the topic's partition count in its
metadata, which it only loads for topics it has produced to.  A worker that
has not yet written to a table's changelog (or was just restarted) has none,
and ``table_route`` then fails; :func:`ensure_metadata` loads it first.
Once loaded it returns at once.
"""

from __future__ import annotations

from qastream.app import app


async def ensure_metadata(topic_name: str) -> None:
    """Load ``topic_name``'s partition count into the producer's metadata."""
    await app.producer._ensure_producer().partitions_for(topic_name)  # type: ignore[attr-defined]


async def partition_of(topic_name: str, key: str) -> int:
    """The partition of ``topic_name`` that raw ``key`` hashes to."""
    await ensure_metadata(topic_name)
    return app.producer.key_partition(topic_name, key.encode()).partition
