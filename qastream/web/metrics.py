"""``GET /metrics``: JSON figures on answers, quality, cache and this worker."""

from __future__ import annotations

import time

from faust import web

from qastream.app import app, breaker, cache, llm, scorer, storage, topics
from qastream.poison import poison_counts
from qastream.tables.parking import overload_parking, quota_parking
from qastream.web.query import query_counts
from qastream.web.requests import guarded

_started = time.time()


def parked(table, topic) -> int:
    """Questions waiting out a retry delay in the partitions this worker owns."""
    active = {tp.partition for tp in app.consumer.assignment() if tp.topic == topic.get_topic_name()}
    return sum(1 for entry in table.values() if entry["partition"] in active)


@app.page("/metrics")
class MetricsView(web.View):
    """Totals from the database; cache, LLM and scorer counts of this worker."""

    @guarded
    async def get(self, request: web.Request) -> web.Response:
        body = await storage.metrics()
        body["cache_info"] = await cache.info()
        body["queries"] = dict(query_counts)
        body["llm"] = await llm.info()
        body["scorer"] = await scorer.info()
        body["circuit_breaker"] = breaker.snapshot()
        body["parked_retries"] = {"overload": parked(overload_parking, topics.overload),
                                  "quota": parked(quota_parking, topics.quota)}
        body["poison_messages"] = dict(poison_counts)
        body["worker"] = {"uptime_seconds": round(time.time() - _started, 1), "canonical_url": str(app.conf.canonical_url)}
        return self.json(body)
