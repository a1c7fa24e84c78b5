"""``GET /metrics``: JSON figures on answers, quality, cache and this worker."""

from __future__ import annotations

import time

from faust import web

from qastream.app import app, cache, llm, scorer, storage
from qastream.web.query import query_counts
from qastream.web.requests import guarded

_started = time.time()


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
        body["worker"] = {"uptime_seconds": round(time.time() - _started, 1), "canonical_url": str(app.conf.canonical_url)}
        return self.json(body)
