"""Consumer lag of this worker, per topic and partition: how far the committed offsets trail the logs.

Lag is what a stuck stage looks like from outside: messages keep arriving on
its topic and the committed offset stays put.  For every partition of the
graph's topics that this worker is assigned, the log end offset (highwater)
comes from the broker (one ListOffsets request; the consumer's cached
highwater from its last fetch if that fails) and the committed offset from
Faust's consumer.  Each worker reports only its own partitions; add up the
workers for the whole group.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable, Mapping, Optional

logger = logging.getLogger(__name__)

HIGHWATER_TIMEOUT_SECONDS = 2.0


def partition_lag(highwater: Optional[int], committed: Optional[int], read: Optional[int]) -> Optional[int]:
    """Messages not yet committed in one partition.

    ``committed`` is the next offset to consume (Kafka's convention) and
    ``read`` the offset of the last message read.  Before the first commit
    the read position stands in; before anything was read the whole log is
    lag (the consumer starts from the earliest offset).
    """
    if highwater is None:
        return None
    if committed is not None:
        return max(0, highwater - committed)
    if read is not None:
        return max(0, highwater - (read + 1))
    return max(0, highwater)


def fold_lag(rows: Iterable[tuple[str, int, Optional[int], Optional[int], Optional[int]]]) -> dict[str, Any]:
    """``(topic, partition, highwater, committed, read)`` rows -> the JSON of ``consumer_lag``."""
    topics: dict[str, dict[str, Any]] = {}
    total = 0
    for topic, partition, highwater, committed, read in sorted(rows):
        lag = partition_lag(highwater, committed, read)
        entry = topics.setdefault(topic, {"lag": 0, "partitions": {}})
        entry["partitions"][str(partition)] = {"highwater": highwater, "committed": committed, "lag": lag}
        entry["lag"] += lag or 0
        total += lag or 0
    return {"total": total, "topics": topics}


async def consumer_lag(consumer: Any, topic_names: Iterable[str]) -> dict[str, Any]:
    """Lag of the partitions of ``topic_names`` assigned to this worker's Faust ``consumer``."""
    names = set(topic_names)
    try:
        tps = sorted(tp for tp in consumer.assignment() if tp.topic in names)
    except Exception as exc:  # not started yet, or between generations
        logger.debug("no assignment to report lag for: %r", exc)
        return {"total": 0, "topics": {}}
    if not tps:
        return {"total": 0, "topics": {}}
    highwaters: Mapping[Any, Optional[int]]
    try:
        highwaters = await asyncio.wait_for(consumer.highwaters(*tps), HIGHWATER_TIMEOUT_SECONDS)
    except Exception as exc:
        logger.debug("highwaters from the broker failed (%r): using the last fetched", exc)
        highwaters = {tp: _cached_highwater(consumer, tp) for tp in tps}
    # Faust keeps the committed and read offsets on the consumer; the
    # committed ones are seeded from the broker at assignment, so they are
    # right after a restart too.  No public accessor exists in Faust 0.15.
    committed = getattr(consumer, "_committed_offset", {})
    read = getattr(consumer, "_read_offset", {})
    return fold_lag((tp.topic, tp.partition, highwaters.get(tp), committed.get(tp), read.get(tp)) for tp in tps)


def _cached_highwater(consumer: Any, tp: Any) -> Optional[int]:
    try:
        return consumer.highwater(tp)
    except Exception:
        return None
