"""``GET /metrics/prometheus``: the figures of ``GET /metrics`` in Prometheus' text format.

The path is not ``/metrics``: that one is qastream's JSON API, and Faust's
own Prometheus sensor would claim it too (DESIGN §4).  Nothing is counted
twice: a collector turns the same snapshot the JSON view serves (plus the
in-process histograms behind its percentiles) into metric families at
scrape time.

Two kinds of series, told apart by name:

* ``qastream_db_*`` are read from the database and cover the whole
  deployment: every worker reports the same value (use ``max`` across
  workers, not ``sum``).
* every other ``qastream_*`` series is this worker's own, since it started:
  counters and histograms that Prometheus sums across workers.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

from faust import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from qastream.app import app, llm
from qastream.policy.breaker import CLOSED, HALF_OPEN, OPEN
from qastream.telemetry.distribution import Distribution
from qastream.web.metrics import snapshot
from qastream.web.requests import guarded

BREAKER_STATES = (CLOSED, HALF_OPEN, OPEN)


def _gauge(name: str, doc: str, labels: tuple[str, ...], items: Iterable[tuple[tuple[str, ...], Any]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, value in items:
        if value is not None:
            family.add_metric(list(values), float(value))
    return family


def _counter(name: str, doc: str, labels: tuple[str, ...], items: Iterable[tuple[tuple[str, ...], Any]]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    for values, value in items:
        family.add_metric(list(values), float(value or 0))
    return family


def _histogram(name: str, doc: str, label: str, series: Mapping[str, Distribution], scale: float) -> Metric:
    """A histogram family from :class:`Distribution` buckets; ``scale`` converts units (ms -> s)."""
    family = HistogramMetricFamily(name, doc, labels=[label] if label else [])
    for value, dist in series.items():
        buckets = [("+Inf" if bound == float("inf") else repr(round(bound * scale, 6)), n)
                   for bound, n in dist.cumulative()]
        family.add_metric([value] if label else [], buckets, dist.sum * scale)
    return family


def families(m: Mapping[str, Any], histograms: Mapping[str, Mapping[str, Distribution]]) -> Iterator[Metric]:
    """Metric families of a ``/metrics`` snapshot ``m`` and the worker's histograms."""
    # -- the deployment, from the database --
    yield _gauge("qastream_db_responses", "Stored answers.", (), [((), m["total_responses"])])
    yield _gauge("qastream_db_questions", "Questions by status.", ("status",),
                 (((s,), n) for s, n in m["questions_by_status"].items()))
    yield _gauge("qastream_db_batches", "Batches by status.", ("status",),
                 (((s,), n) for s, n in m["batches_by_status"].items()))
    yield _gauge("qastream_db_average_score", "Average BERTScore F1 of stored answers.", (),
                 [((), m["average_score"])])
    yield _gauge("qastream_db_low_quality_responses", "Answers kept below the threshold.", (),
                 [((), m["low_quality_responses"])])
    yield _gauge("qastream_db_responses_by_attempts", "Stored answers by LLM generations used.", ("attempts",),
                 (((a,), n) for a, n in m["attempts_distribution"].items()))
    yield _gauge("qastream_db_responses_by_score", "Stored answers by score bucket.", ("bucket",),
                 (((b,), n) for b, n in m["score_distribution"].items()))
    yield _gauge("qastream_db_dead_letters", "Failed questions by error class.", ("error_class",),
                 (((c,), n) for c, n in m["dead_letters_by_class"].items()))
    yield _gauge("qastream_db_question_latency_seconds", "Acceptance-to-storage time percentiles.", ("quantile",),
                 (((f"0.{p[1:]}",), None if v is None else v / 1000.0) for p, v in m["processing_time_ms"].items()))
    yield _gauge("qastream_db_throughput_per_minute", "Questions per minute over a recent window.", ("kind", "window"),
                 (((kind.removesuffix("_per_minute"), w), rate) for kind, rates in m["throughput"].items()
                  for w, rate in rates.items()))
    # -- this worker --
    yield _counter("qastream_queries", "POST /query outcomes.", ("outcome",),
                   (((k,), n) for k, n in m["queries"].items()))
    cache = m["cache_info"]
    yield _counter("qastream_cache_requests", "Answer cache lookups.", ("result",),
                   [(("hit",), cache["hits"]), (("miss",), cache["misses"]), (("error",), cache["errors"])])
    yield _counter("qastream_llm_calls", "LLM calls started.", (), [((), m["llm"]["calls"])])
    yield _gauge("qastream_llm_in_flight", "LLM calls in flight.", (), [((), m["llm"]["in_flight"])])
    yield _counter("qastream_llm_failures", "Failed LLM calls by error class.", ("error_class",),
                   (((c,), n) for c, n in m["llm"]["failures_by_class"].items()))
    yield _histogram("qastream_llm_call_duration_seconds", "LLM call latency.", "outcome",
                     histograms["llm"], 0.001)
    yield from token_families(m)
    servers = m["llm"]["servers"]
    yield _counter("qastream_llm_server_calls", "LLM calls started, per LLM server.", ("server",),
                   (((s["url"],), s["calls"]) for s in servers))
    yield _gauge("qastream_llm_server_in_flight", "LLM calls in flight, per LLM server.", ("server",),
                 (((s["url"],), s["in_flight"]) for s in servers))
    yield _counter("qastream_llm_server_failures", "Failed LLM calls per LLM server and error class.",
                   ("server", "error_class"),
                   (((s["url"], c), n) for s in servers for c, n in s["failures_by_class"].items()))
    yield _gauge("qastream_llm_server_breaker_state", "1 for each LLM server's circuit breaker state.",
                 ("server", "state"), (((s["url"], state), int(s["breaker"]["state"] == state))
                                       for s in servers for state in BREAKER_STATES))
    yield _counter("qastream_llm_server_breaker_transitions", "Circuit breaker transitions per LLM server, by the "
                   "state entered.", ("server", "state"),
                   (((s["url"], state), s["breaker"]["entered"].get(state, 0)) for s in servers
                    for state in BREAKER_STATES))
    yield _counter("qastream_scorer_pairs", "Answer/reference pairs scored.", (), [((), m["scorer"]["pairs_scored"])])
    breaker = m["circuit_breaker"]
    yield _gauge("qastream_circuit_breaker_state", "1 for the state of the LLM as a whole: closed while any "
                 "server's breaker is closed, open when all are.", ("state",),
                 (((s,), int(breaker["state"] == s)) for s in BREAKER_STATES))
    yield _counter("qastream_circuit_breaker_held_questions", "Questions that waited for the breaker.", (),
                   [((), breaker["questions_held"])])
    yield _gauge("qastream_parked_retries", "Questions waiting out a retry delay.", ("kind",),
                 (((k,), n) for k, n in m["parked_retries"].items()))
    yield _counter("qastream_retries", "Retries parked, by error class.", ("error_class",),
                   (((c,), n) for c, n in m["retries"]["by_class"].items()))
    yield _counter("qastream_retries_exhausted", "Questions dead-lettered after their last retry.", ("error_class",),
                   (((c,), n) for c, n in m["retries"]["exhausted_by_class"].items()))
    yield _counter("qastream_stalled_requeued", "Stranded questions re-enqueued by reconciliation, by last stage.",
                   ("stage",), (((s,), n) for s, n in m["stalled_requeued"]["by_stage"].items()))
    yield _counter("qastream_poison_messages", "Undecodable messages by topic.", ("topic",),
                   (((t,), n) for t, n in m["poison_messages"].items()))
    yield _counter("qastream_outcomes", "Terminal outcomes this worker stored.", ("outcome",),
                   (((o,), n) for o, n in m["worker_counts"]["outcomes"].items()))
    yield _counter("qastream_dead_letters", "Dead letters this worker stored, by error class.", ("error_class",),
                   (((c,), n) for c, n in m["worker_counts"]["dead_letters_by_class"].items()))
    yield _histogram("qastream_question_duration_seconds", "Acceptance-to-storage time of stored answers.", "",
                     histograms["question"], 0.001)
    yield _histogram("qastream_answer_score", "BERTScore F1 of stored answers.", "", histograms["score"], 1.0)
    lag = m["consumer_lag"]["topics"]
    rows = [(topic, p, entry) for topic, t in lag.items() for p, entry in t["partitions"].items()]
    yield _gauge("qastream_consumer_lag", "Messages not yet committed, per assigned partition.",
                 ("topic", "partition"), (((t, p), e["lag"]) for t, p, e in rows))
    yield _gauge("qastream_consumer_highwater", "Log end offset, per assigned partition.",
                 ("topic", "partition"), (((t, p), e["highwater"]) for t, p, e in rows))
    yield _gauge("qastream_consumer_committed_offset", "Committed offset, per assigned partition.",
                 ("topic", "partition"), (((t, p), e["committed"]) for t, p, e in rows))
    yield _gauge("qastream_uptime_seconds", "Seconds since the worker started.", (),
                 [((), m["worker"]["uptime_seconds"])])


def token_families(m: Mapping[str, Any]) -> Iterator[Metric]:
    """Tokens and generation time: this worker's by model and server (counters), the stored answers' (db)."""
    sources = [((t["model"], t["server"]), t) for t in m["llm_tokens"]]
    yield _counter("qastream_llm_prompt_tokens", "Prompt tokens the LLM evaluated, by model and server.",
                   ("model", "server"), ((k, t["prompt_tokens"]) for k, t in sources))
    yield _counter("qastream_llm_eval_tokens", "Tokens the LLM generated, by model and server.",
                   ("model", "server"), ((k, t["eval_tokens"]) for k, t in sources))
    yield _counter("qastream_llm_eval_seconds", "Generation time the LLM reported, by model and server.",
                   ("model", "server"), ((k, t["eval_seconds"]) for k, t in sources))
    yield _counter("qastream_llm_load_seconds", "Model load time the LLM reported, by model and server.",
                   ("model", "server"), ((k, t["load_seconds"]) for k, t in sources))
    tokens = m["tokens"]
    yield _gauge("qastream_db_tokens", "Tokens spent on the stored answers (wasted: on attempts not kept).",
                 ("kind",), (((k,), tokens[f"{k}_tokens"]) for k in ("prompt", "eval", "wasted")))


class SnapshotCollector:
    """A prometheus-client collector over one snapshot (set just before each scrape is rendered)."""

    def __init__(self) -> None:
        self.snapshot: Mapping[str, Any] = {}

    def collect(self) -> Iterator[Metric]:
        histograms = {"llm": {"ok": llm.latency_ms, "error": llm.error_latency_ms},
                      "question": {"": app.runtime.counts.question_ms},
                      "score": {"": app.runtime.counts.answer_scores}}
        return families(self.snapshot, histograms)


collector = SnapshotCollector()
registry = CollectorRegistry(auto_describe=False)
registry.register(collector)
ProcessCollector(namespace="qastream", registry=registry)


def render(snap: Mapping[str, Any]) -> bytes:
    """The exposition text of ``snap``."""
    # No await between setting and rendering: concurrent scrapes cannot mix snapshots.
    collector.snapshot = snap
    return generate_latest(registry)


@app.page("/metrics/prometheus")
class PrometheusView(web.View):
    """Prometheus text exposition (version 0.0.4 compatible)."""

    @guarded
    async def get(self, request: web.Request) -> web.Response:
        return self.bytes(render(await snapshot()), headers={"Content-Type": CONTENT_TYPE_LATEST})
