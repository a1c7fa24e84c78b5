"""``qastream load DATASET...``: push a data set through the pipeline at a chosen rate.

``--via http`` posts each question to ``POST /query`` of a running worker,
exactly as users do.  ``--via kafka`` does what that view does without HTTP:
it writes the question to the database first (the store of record, so the
question is never on the topic without a row), then produces a
:class:`~qastream.models.Job` keyed by ``question_id`` to the topic of its
lane (``--lane``: the pending topic, or the bulk topic batches use) and a
``queued`` status event.  Both honour ``--rate`` and ``--arrival``
(:mod:`qastream.devtools.arrivals`) with at most ``--concurrency`` requests in
flight, show a progress bar, and end with a summary: accepted, cache hits,
rejected by reason, and acceptance latency percentiles.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Optional

import aiohttp
import click
from faust.cli import argument, option
from tqdm import tqdm

from qastream.app import app, cache, settings, storage, topics
from qastream.datasets import FORMATS, BadRows, Record, open_datasets
from qastream.datasets.records import sample, take
from qastream.db.queries import CREATED, FOUND, IN_FLIGHT, RESUBMITTED, Submission
from qastream.devtools.arrivals import ARRIVALS, arrival_offsets
from qastream.errors import RequestError
from qastream.models import Job, event_for
from qastream.policy.ids import question_id
from qastream.policy.lanes import Lane
from qastream.policy.lifecycle import TERMINAL, Stage, State
from qastream.telemetry.stats import percentile
from qastream.web.requests import parse_query

#: Outcomes of one submission, as counted in the summary.
ACCEPTED = "accepted"
IN_FLIGHT_OUTCOME = "already in flight"
CACHE_HIT = "cache hit"
DATABASE_HIT = "answered from the database"
REJECTED = "rejected"

#: Waits before re-sending after a 503 or a connection failure (the worker may be rebalancing).
HTTP_RETRY_DELAYS = (0.5, 1.0, 2.0)


@dataclass
class Outcome:
    kind: str
    question_id: Optional[str] = None
    reason: Optional[str] = None


@dataclass
class Tally:
    """What the load did."""

    outcomes: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    accepted_ids: list[str] = field(default_factory=list)
    behind_ms: float = 0.0          # how far the last send lagged its schedule

    def add(self, outcome: Outcome, latency_ms: float) -> None:
        self.outcomes[outcome.kind] += 1
        self.latencies_ms.append(latency_ms)
        if outcome.kind == REJECTED:
            self.rejected[outcome.reason or "unknown"] += 1
        elif outcome.question_id and outcome.kind in (ACCEPTED, IN_FLIGHT_OUTCOME):
            self.accepted_ids.append(outcome.question_id)


def percentiles(values: list[float], points: Iterable[int] = (50, 90, 99)) -> dict[str, Optional[float]]:
    """Nearest-rank percentiles (:func:`qastream.telemetry.stats.percentile`), plus the maximum, to 0.1 ms."""
    ordered = sorted(values)
    out: dict[str, Optional[float]] = {}
    for p in points:
        value = percentile(ordered, p)
        out[f"p{p}"] = None if value is None else round(value, 1)
    out["max"] = round(ordered[-1], 1) if ordered else None
    return out


def http_outcome(status: int, body: Any) -> Outcome:
    """Classify the answer of ``POST /query``."""
    body = body if isinstance(body, dict) else {}
    if status == 202:
        kind = IN_FLIGHT_OUTCOME if body.get("status") not in (None, State.PENDING) or \
            "already" in str(body.get("message", "")) else ACCEPTED
        return Outcome(kind, body.get("question_id"))
    if status == 200 and body.get("status") == "found":
        result = body.get("result") or {}
        return Outcome(CACHE_HIT if body.get("source") == "cache" else DATABASE_HIT, result.get("question_id"))
    return Outcome(REJECTED, reason=f"HTTP {status}: {body.get('error', 'no error message')}"[:160])


async def post_query(session: aiohttp.ClientSession, url: str, record: Record) -> Outcome:
    """Submit one question over HTTP, re-sending after a 503 or a refused connection."""
    payload = {"question_text": record.question, "original_answer": record.answer}
    for delay in (*HTTP_RETRY_DELAYS, None):
        try:
            async with session.post(f"{url}/query", json=payload) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = {"error": (await response.text())[:100]}
                if response.status != 503 or delay is None:
                    return http_outcome(response.status, body)
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            if delay is None:
                return Outcome(REJECTED, reason=f"no answer from {url}: {type(exc).__name__}")
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def enqueue(record: Record, lane: Lane = Lane.INTERACTIVE) -> Outcome:
    """Accept one question the way ``POST /query`` does, then produce it to ``lane``'s topic."""
    try:
        query = parse_query({"question_text": record.question, "original_answer": record.answer},
                            settings.max_question_chars)
    except RequestError as err:
        return Outcome(REJECTED, reason=f"invalid: {err.message}")
    qid = question_id(query.question_text)
    if await cache.get(qid) is not None:
        return Outcome(CACHE_HIT, qid)
    acceptance = await storage.accept(Submission(qid, query.question_text, query.original_answer, time.time()))
    if acceptance.kind == FOUND:
        return Outcome(DATABASE_HIT, qid)
    if acceptance.kind == IN_FLIGHT:
        return Outcome(IN_FLIGHT_OUTCOME, qid)
    assert acceptance.kind in (CREATED, RESUBMITTED)
    job = Job(question_id=qid, question_text=query.question_text, original_answer=acceptance.original_answer,
              accepted_at=acceptance.accepted_at, epoch=acceptance.epoch, lane=lane)
    sent = await topics.intake(lane).send(key=qid, value=job)
    await (await topics.events.send(key=qid, value=event_for(job, Stage.QUEUED)))
    await sent  # delivered: acceptance latency includes the broker's acknowledgement
    return Outcome(ACCEPTED, qid)


async def run_load(records: Iterable[Record], submit: Callable[[Record], Awaitable[Outcome]], *, rate: float,
                   arrival: str, burst_size: int, concurrency: int, seed: int, total: Optional[int]) -> Tally:
    """Send every record on the arrival schedule with at most ``concurrency`` in flight."""
    tally = Tally()
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task] = set()
    bar = tqdm(total=total, desc="submitting", unit="q")
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(record: Record) -> None:
        began = time.perf_counter()
        try:
            outcome = await submit(record)
        except Exception as exc:  # a bug or an outage must not stop the rest of the load
            outcome = Outcome(REJECTED, reason=f"error: {type(exc).__name__}: {exc}"[:160])
        finally:
            slots.release()
        tally.add(outcome, (time.perf_counter() - began) * 1000.0)
        bar.update(1)
        bar.set_postfix(accepted=tally.outcomes[ACCEPTED], hits=tally.outcomes[CACHE_HIT] +
                        tally.outcomes[DATABASE_HIT], rejected=tally.outcomes[REJECTED], refresh=False)

    for record, offset in zip(records, arrival_offsets(rate, arrival, burst_size=burst_size, seed=seed)):
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        tally.behind_ms = max(0.0, (loop.time() - start - offset) * 1000.0)
        task = asyncio.create_task(one(record))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    bar.close()
    return tally


def summary_lines(tally: Tally, bad: BadRows, seconds: float, *, rate: float, arrival: str) -> list[str]:
    sent = sum(tally.outcomes.values())
    pace = f"target {rate:g}/s {arrival}" if rate else "unpaced"
    lines = [f"sent {sent} questions in {seconds:.1f} s ({sent / seconds if seconds else 0:.1f}/s, {pace}; "
             f"last send {tally.behind_ms:.0f} ms behind schedule)",
             f"  accepted                    {tally.outcomes[ACCEPTED]}",
             f"  already in flight           {tally.outcomes[IN_FLIGHT_OUTCOME]}",
             f"  cache hits                  {tally.outcomes[CACHE_HIT] + tally.outcomes[DATABASE_HIT]}  "
             f"(cache {tally.outcomes[CACHE_HIT]}, database {tally.outcomes[DATABASE_HIT]})",
             f"  rejected                    {tally.outcomes[REJECTED]}"]
    lines += [f"    {n:>6}  {reason}" for reason, n in tally.rejected.most_common()]
    lines.append(f"  rows skipped by the reader  {bad.total}")
    lines += ["  " + line for line in bad.lines()]
    p = percentiles(tally.latencies_ms)
    lines.append("acceptance latency ms: " + ", ".join(f"{k} {v}" for k, v in p.items()))
    return lines


async def wait_done(ids: list[str], timeout: float) -> Counter:
    """Poll the database until every question in ``ids`` is completed or failed; counts by status."""
    from sqlalchemy import select

    from qastream.db.queries import Q
    from qastream.services.storage import make_engine

    engine = make_engine(settings.resolved_database_url())
    wanted = set(ids)
    statuses: Counter = Counter()
    deadline = time.monotonic() + timeout
    bar = tqdm(total=len(wanted), desc="completing", unit="q")
    try:
        while True:
            with engine.connect() as connection:
                rows = {r.question_id: r.status for chunk in _chunks(sorted(wanted), 500)
                        for r in connection.execute(select(Q.c.question_id, Q.c.status)
                                                    .where(Q.c.question_id.in_(chunk)))}
            statuses = Counter(rows.values())
            done = sum(n for s, n in statuses.items() if s in TERMINAL)
            bar.n = done
            bar.refresh()
            if done >= len(wanted) or time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(2.0)
    finally:
        bar.close()
        engine.dispose()


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@app.command(
    argument("datasets", nargs=-1, required=True),
    option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
           help="Reader of the data set(s); auto goes by the name (foldoc, jargon, .csv, .json, .jsonl, .index)."),
    option("--via", type=click.Choice(["http", "kafka"]), default="http", show_default=True,
           help="POST /query of a running worker, or straight to the database and the lane's topic."),
    option("--lane", type=click.Choice([lane.value for lane in Lane]), default=Lane.INTERACTIVE.value,
           show_default=True, help="Lane of the questions (bulk needs --via kafka: POST /query is interactive)."),
    option("--url", default=None, help="Worker to post to (default http://WEB_HOST:WEB_PORT)."),
    option("--limit", type=int, default=None, help="Send at most this many questions (the first ones)."),
    option("--sample", "sample_size", type=int, default=None,
           help="Send a random sample of this many questions instead of the first ones."),
    option("--seed", type=int, default=1, show_default=True, help="Seed of --sample and of Poisson arrivals."),
    option("--rate", type=float, default=0.0, show_default=True, help="Mean questions per second; 0 = unpaced."),
    option("--arrival", type=click.Choice(ARRIVALS), default="uniform", show_default=True,
           help="Spacing of the sends at --rate."),
    option("--burst-size", type=int, default=10, show_default=True, help="Questions per burst (--arrival burst)."),
    option("--concurrency", type=int, default=8, show_default=True, help="Most submissions in flight."),
    option("--wait", is_flag=True, help="Afterwards, wait until every accepted question is completed or failed."),
    option("--wait-timeout", type=float, default=3600.0, show_default=True, help="Longest wait, seconds."),
)
async def load(self, datasets: tuple[str, ...], fmt: str, via: str, lane: str, url: Optional[str],
               limit: Optional[int], sample_size: Optional[int], seed: int, rate: float, arrival: str,
               burst_size: int, concurrency: int, wait: bool, wait_timeout: float) -> None:
    """Send a data set's questions through the pipeline (POST /query, or a lane's topic)."""
    bad = BadRows()
    try:
        if concurrency < 1 or burst_size < 1 or rate < 0:
            raise ValueError("--concurrency and --burst-size must be at least 1, --rate not negative")
        if via == "http" and lane != Lane.INTERACTIVE:
            raise ValueError("--lane bulk needs --via kafka: POST /query puts questions on the interactive lane")
        records: Iterable[Record] = open_datasets(list(datasets), bad, fmt)
        total = limit
        if sample_size is not None:
            records = sample(records, sample_size, seed)
            total = len(records) if limit is None else min(limit, len(records))
        records = take(records, limit)
    except (FileNotFoundError, ValueError) as exc:
        # A message and exit code 2, not the traceback an exception inside a Faust command prints.
        self.say(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    started = time.perf_counter()
    pacing: dict[str, Any] = dict(rate=rate, arrival=arrival, burst_size=burst_size, concurrency=concurrency,
                                  seed=seed, total=total)
    if via == "http":
        target = (url or f"http://{settings.web_host}:{settings.web_port}").rstrip("/")
        self.say(f"posting to {target}/query")
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout,
                                         connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            tally = await run_load(records, lambda r: post_query(session, target, r), **pacing)
    else:
        self.say(f"writing to {settings.resolved_database_url().split('://')[0]} and topic "
                 f"{topics.intake(lane).get_topic_name()} on {settings.broker_url}")
        from qastream.streaming.topic_admin import ensure_topics

        await ensure_topics(settings.broker_url, app.topic_layout)
        await storage.start()
        await cache.start()
        await self.app.maybe_start_producer()
        try:
            tally = await run_load(records, lambda r: enqueue(r, Lane(lane)), **pacing)
            await self.app.producer.flush()
        finally:
            await self.app.producer.stop()
            await cache.stop()
            await storage.stop()
    for line in summary_lines(tally, bad, time.perf_counter() - started, rate=rate, arrival=arrival):
        self.say(line)
    if wait and tally.accepted_ids:
        waited = time.perf_counter()
        statuses = await wait_done(tally.accepted_ids, wait_timeout)
        self.say(f"after {time.perf_counter() - waited:.0f} s: " +
                 ", ".join(f"{status} {n}" for status, n in sorted(statuses.items())) +
                 "  (qastream report shows their quality)")
