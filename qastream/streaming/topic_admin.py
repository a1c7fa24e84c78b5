"""Create qastream's topics with their configured partition counts before anything subscribes.

Brokers that auto-create topics (Tansu always does; Kafka when
``auto.create.topics.enable``) create a topic on the first metadata request
for it, with the broker's default partition count.  A consumer subscribing
before Faust declares the topic is enough to get the wrong count, and then
the events topic no longer matches the tables' changelogs
(``PartitionsMismatch``).  So the worker creates them itself first, and
refuses to start if an existing topic has a different count: adding
partitions later moves keys between partitions (docs/operations.md).
"""

from __future__ import annotations

import logging
from typing import Mapping, Optional

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from yarl import URL

from qastream.errors import PermanentError

logger = logging.getLogger(__name__)


class TopicLayoutError(PermanentError, RuntimeError):
    """An existing topic has a partition count other than the configured one.

    Raised when topics are created at worker start (:func:`ensure_topics`):
    keys would land on other partitions than the tables expect, so the worker
    does not start until the topics or the ``QASTREAM_PARTITIONS_*`` settings
    are changed.  Still a ``RuntimeError`` for callers that catch that.
    """


def bootstrap_servers(broker_url: str) -> list[str]:
    """``host:port`` list from Faust's ``kafka://h1:9092;kafka://h2:9092`` form."""
    servers = []
    for part in broker_url.replace(",", ";").split(";"):
        part = part.strip()
        if part:
            url = URL(part if "://" in part else f"kafka://{part}")
            servers.append(f"{url.host}:{url.port or 9092}")
    return servers


async def ensure_topics(broker_url: str, layout: Mapping[str, int], replication: int = 1) -> None:
    """Create missing topics of ``layout`` (name -> partitions) and check existing ones."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(broker_url))
    await admin.start()
    try:
        # Listing all topics names none, so it cannot trigger auto-creation;
        # describing a topic by name would create it with the broker's default.
        present = set(await admin.list_topics())
        missing = [NewTopic(name, partitions, replication) for name, partitions in layout.items()
                   if name not in present]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker created them at the same moment
            logger.info("created topics %s", ", ".join(f"{t.name}[{t.num_partitions}]" for t in missing))
        metadata = await admin.describe_topics(list(layout))
        existing = {t["topic"]: len(t["partitions"]) for t in metadata}
        wrong = {name: (existing[name], want) for name, want in layout.items()
                 if name in existing and existing[name] != want}
        if wrong:
            details = "; ".join(f"{n} has {have} partitions, settings say {want}" for n, (have, want) in wrong.items())
            raise TopicLayoutError(f"topic partition counts differ from the settings: {details}")
    finally:
        await admin.close()


async def repair_topics(broker_url: str, layout: Mapping[str, int], *, replace_mismatched: bool,
                        replication: int = 1) -> dict[str, Optional[int]]:
    """Re-create the topics of ``layout`` the broker lost; returns name -> partitions found (``None``: missing).

    A broker that restarts empty (the memory-only development broker)
    loses every topic under a running worker, and its auto-creation brings
    them back at the first metadata request with its own default partition
    count, which breaks co-partitioning.  A missing topic is created with its
    configured count.  A topic with another count is deleted and created
    again only when ``replace_mismatched`` (the development profile: whatever
    it held is gone with the restart anyway); on a production broker that
    would destroy data, so it is left for an operator and only reported.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(broker_url))
    await admin.start()
    try:
        present = set(await admin.list_topics())  # by name would auto-create them
        names = [name for name in layout if name in present]
        existing = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)} if names else {}
        broken = {name: existing.get(name) for name, want in layout.items() if existing.get(name) != want}
        if not broken:
            return {}
        mismatched = [name for name, have in broken.items() if have is not None]
        if mismatched and not replace_mismatched:
            logger.error("topics with partition counts other than the settings (left as they are): %s",
                         ", ".join(f"{n}[{broken[n]}, want {layout[n]}]" for n in mismatched))
            broken = {name: have for name, have in broken.items() if have is None}
        elif mismatched:
            await admin.delete_topics(mismatched)
        if broken:
            try:
                await admin.create_topics([NewTopic(name, layout[name], replication) for name in broken])
            except TopicAlreadyExistsError:
                pass  # auto-created again in between, or by another worker: the next check sees it
            logger.warning("re-created topics the broker lost: %s",
                           ", ".join(f"{n}[{layout[n]}] (found {broken[n] or 'none'})" for n in broken))
        return broken
    finally:
        await admin.close()
