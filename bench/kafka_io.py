"""Reading and writing the benchmark broker's topics directly with aiokafka.

:func:`end_offsets` counts the records on every topic (one record per batch in
the development profile, so an end offset is a record count); :func:`produce`
writes with the producer settings a worker's Faust producer uses, so a raw
producer ceiling is comparable with what the worker achieves.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Iterable, Optional

import stack  # noqa: F401  (puts the repository on sys.path for qastream)


async def _end_offsets(bootstrap: str) -> dict[str, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        names = [t for t in await consumer.topics() if not t.startswith("__")]
        partitions = [TopicPartition(t, p) for t in names for p in (consumer.partitions_for_topic(t) or ())]
        offsets = await consumer.end_offsets(partitions) if partitions else {}
        counts: Counter[str] = Counter()
        for tp, offset in offsets.items():
            counts[tp.topic] += offset
        return dict(counts)
    finally:
        await consumer.stop()


def end_offsets(bootstrap: str) -> dict[str, int]:
    """Records on every topic of the broker (its end offsets summed over partitions)."""
    return asyncio.run(_end_offsets(bootstrap))


async def _records(bootstrap: str, topic: str) -> list[tuple[float, bytes]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        stamps: list[tuple[float, bytes]] = []
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=2000)
            if not batches:
                break
            for tp, records in batches.items():
                stamps.extend((r.timestamp / 1000.0, r.value) for r in records)
                if records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return sorted(stamps)
    finally:
        await consumer.stop()


def topic_records(bootstrap: str, topic: str) -> list[tuple[float, bytes]]:
    """(producer timestamp, value) of every record on ``topic``, in timestamp order."""
    return asyncio.run(_records(bootstrap, topic))


def topic_timestamps(bootstrap: str, topic: str) -> list[float]:
    """Producer timestamps of every record on ``topic``, sorted."""
    return [stamp for stamp, _ in topic_records(bootstrap, topic)]


async def _create_topics(bootstrap: str, layout: dict[str, int]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name, partitions in layout.items()])
    finally:
        await admin.close()


def create_topics(bootstrap: str, layout: dict[str, int]) -> None:
    asyncio.run(_create_topics(bootstrap, layout))


def faust_producer_settings() -> dict[str, Any]:
    """The aiokafka producer settings a qastream worker's Faust producer uses in the development profile."""
    from qastream.settings import Settings
    from qastream.streaming.broker import faust_options

    options = faust_options(Settings())
    # Faust's defaults for what faust_options leaves alone: acks=-1, linger 0, no compression.
    return {"acks": "all", "linger_ms": 0, "compression_type": None,
            "max_batch_size": options["producer_max_batch_size"]}


async def _produce(bootstrap: str, records: Iterable[tuple], concurrency: int,
                   settings: dict[str, Any]) -> tuple[int, float]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **settings)
    await producer.start()
    iterator = iter(records)
    sent = 0
    pending: list[asyncio.Future] = []

    async def sender() -> None:
        nonlocal sent
        for topic, key, value, *partition in iterator:  # shared iterator: each record is sent once
            pending.append(await producer.send(topic, value, key=key, partition=partition[0] if partition else None))
            sent += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        await asyncio.gather(*pending)
        return sent, time.perf_counter() - started
    finally:
        await producer.stop()


def produce(bootstrap: str, records: Iterable[tuple], *, concurrency: int = 64,
            settings: Optional[dict[str, Any]] = None) -> tuple[int, float]:
    """Send ``(topic, key, value[, partition])`` records from ``concurrency`` coroutines; returns (count, seconds)."""
    return asyncio.run(_produce(bootstrap, records, concurrency,
                               faust_producer_settings() if settings is None else settings))

