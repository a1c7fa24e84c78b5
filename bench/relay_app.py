"""A bare Faust relay: the framework's own cost for qastream's message flow (``bench/overhead.py``).

``RELAY_HOPS`` topics ``RELAY_PREFIX-0`` .. ``-N``, one agent per topic that
forwards each record unchanged to the next topic, and a sink on the last.
Records are qastream's own :class:`~qastream.models.Job` (same JSON, same
size), topics have qastream's partition count and keys are raw, and the app
takes its options from :func:`qastream.streaming.broker.faust_options`, so the broker
profile (one record per producer batch, session and heartbeat) is the
worker's.  No tables, no database, no HTTP calls: what is left is Faust.

    RELAY_HOPS=7 RELAY_PREFIX=relay-x QASTREAM_BROKER_URL=... QASTREAM_WEB_PORT=... \
        python bench/relay_app.py worker -l warn
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faust  # noqa: E402

from qastream.models import Job  # noqa: E402
from qastream.settings import Settings  # noqa: E402
from qastream.streaming.broker import faust_options  # noqa: E402

HOPS = int(os.environ.get("RELAY_HOPS", "7"))
PREFIX = os.environ.get("RELAY_PREFIX", "relay")
settings = Settings.from_env()

app = faust.App(f"{PREFIX}-app", **faust_options(settings))
topics = [app.topic(f"{PREFIX}-{i}", key_type=str, key_serializer="raw", value_type=Job,
                    partitions=settings.partitions_pending, internal=True) for i in range(HOPS)]


def relay_agent(index: int) -> None:
    target = topics[index + 1]

    async def relay(jobs: faust.StreamT[Job]) -> None:
        async for key, job in jobs.items():
            await target.send(key=key, value=job)

    app.agent(topics[index], name=f"relay_{index}")(relay)


for _index in range(HOPS - 1):
    relay_agent(_index)


@app.agent(topics[-1], name="sink")
async def sink(jobs: faust.StreamT[Job]) -> None:
    async for _ in jobs:
        pass


if __name__ == "__main__":
    app.main()
