"""``GET /metrics``: JSON figures on answers, quality, throughput, latency, errors, lag and this worker.

Totals come from the database (the whole deployment); ``llm``, ``scorer``,
``cache_info``, ``queries``, ``worker_counts``, ``consumer_lag`` and the
other worker fields are this worker's.  README "Figures" documents every
field, and a test keeps the two in step.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from faust import web

from qastream.app import app, cache, llm, scorer, settings, storage, topics, webhook_client
from qastream.streaming.timers import survives_failures
from qastream.tables.parking import overload_parking, quota_parking, webhook_parking
from qastream.telemetry.lag import consumer_lag
from qastream.web.admission import bounded
from qastream.web.requests import guarded


def parked(table, topic) -> int:
    """Questions waiting out a retry delay in the partitions this worker owns."""
    active = {tp.partition for tp in app.consumer.assignment() if tp.topic == topic.get_topic_name()}
    return sum(1 for entry in table.values() if entry["partition"] in active)


def errors_by_class(llm_failures: dict[str, int], poison: dict[str, int]) -> dict[str, int]:
    """LLM call failures by class plus undecodable messages, on this worker."""
    errors = dict(llm_failures)
    if poison:
        errors["poison"] = sum(poison.values())
    return errors


def last_lag(lag: Optional[dict[str, Any]], taken_at: float, now: float) -> dict[str, Any]:
    """The lag the timer took last, with ``age_seconds`` (``None`` before the first)."""
    if lag is None:
        return {"total": 0, "topics": {}, "age_seconds": None}
    return {**lag, "age_seconds": round(now - taken_at, 1)}


async def refresh_lag() -> None:
    """Ask the broker for this worker's lag in the background: a request never waits for the broker.

    The broker may take up to ``HIGHWATER_TIMEOUT_SECONDS`` to answer (1.5 s on an idle
    broker); inside the request that was the cost of every ``GET /metrics``.
    """
    lag = await consumer_lag(app.consumer, topics.layout())
    app.runtime.consumer_lag, app.runtime.consumer_lag_at = lag, time.time()


# Registered apart from the definition: Faust's decorator returns the timer's endless loop.
app.timer(settings.lag_interval_seconds)(survives_failures(refresh_lag))


async def snapshot() -> dict[str, Any]:
    """Everything ``GET /metrics`` answers (``/metrics/prometheus`` renders the same figures)."""
    now = time.time()
    runtime = app.runtime
    # Bounded like every database wait at the edge: a database that does not answer is a prompt 503.
    async with bounded("database", settings.db_statement_timeout_seconds):
        body = await storage.metrics()
        body["throughput"] = await storage.throughput(now)
    body["cache_info"] = await cache.info()
    body["queries"] = dict(runtime.query_counts)
    body["llm"] = await llm.info()
    body["llm_tokens"] = runtime.tokens.snapshot()
    body["scorer"] = await scorer.info()
    body["circuit_breaker"] = {"state": llm.breaker_state(), "questions_held": runtime.llm_held,
                               "seconds_until_probe": round(llm.wait_time(), 2),
                               "servers": {server["url"]: server["breaker"]["state"] for server in body["llm"]["servers"]}}
    body["llm_slots"] = runtime.llm_slots.snapshot()
    body["parked_retries"] = {"overload": parked(overload_parking, topics.overload),
                              "quota": parked(quota_parking, topics.quota)}
    body["poison_messages"] = dict(runtime.poison_counts)
    body["errors_by_class"] = errors_by_class(body["llm"]["failures_by_class"], body["poison_messages"])
    counts = runtime.counts.snapshot()
    body["retries"] = {"by_class": counts["retries_by_class"],
                       "exhausted_by_class": counts["retries_exhausted_by_class"],
                       "parked_now": sum(body["parked_retries"].values()),
                       "error_retries_of_completed": body["error_retries_of_completed"]}
    body["worker_counts"] = {"outcomes": counts["outcomes"], "dead_letters_by_class": counts["dead_letters_by_class"],
                             "question_latency_ms": counts["question_latency_ms"]}
    body["stalled_requeued"] = {"total": sum(counts["stalled_requeued_by_stage"].values()),
                                "by_stage": counts["stalled_requeued_by_stage"]}
    body["webhooks"] = {"attempts": dict(runtime.webhook_counts), "parked": parked(webhook_parking, topics.webhooks),
                        **webhook_client.info()}
    body["consumer_lag"] = last_lag(runtime.consumer_lag, runtime.consumer_lag_at, now)
    body["worker"] = {"uptime_seconds": round(now - runtime.started, 1), "canonical_url": str(app.conf.canonical_url)}
    body["generated_at"] = round(now, 3)
    return body


@app.page("/metrics")
class MetricsView(web.View):
    """Totals from the database; throughput, latency, errors, lag and counts of this worker."""

    @guarded
    async def get(self, request: web.Request) -> web.Response:
        return self.json(await snapshot())
