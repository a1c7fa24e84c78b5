"""What the benchmarks share: the stack on free ports, load generation, broker counts, statistics.

* :class:`Stack` starts Tansu, the embedded LLM server and workers with
  :mod:`qastream.embedded` (the same code ``qastream dev`` and the test
  fixtures use), each on a free port, with a throw-away data directory.
* The HTTP load generator runs in a separate process (``python
  bench/common.py loadgen SPEC``) so that it does not share the worker's
  event loop; it is open-loop (requests leave on a fixed schedule whatever
  the server does) or closed-loop.  Latency counts from the moment a request
  is due to leave and includes any wait for a free connection, so a slow
  server cannot hide its queueing; the generator's own timer lateness (its
  sleeps wake on millisecond ticks) is reported apart (``late_p99_ms``), not
  charged to the server.  It speaks HTTP/1.1 on
  raw asyncio streams with keep-alive: an aiohttp client costs several times
  more CPU per request, and on two cores the client's CPU is the worker's.
  :func:`run_wrk` drives Debian's ``wrk`` where closed-loop saturation is
  wanted.
* :func:`end_offsets` counts the records on every topic (one record per
  batch in the development profile, so an end offset is a record count).
* :func:`steady_rate` is the least-squares completions/s over the middle of
  a run, leaving out ramp-up and drain.

Every benchmark prints one JSON line per run, a summary with min/median/max
over runs, and its ratio as the last line.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from qastream.embedded import (free_port, http_ok, log_file, start_llm_server, start_tansu,  # noqa: E402
                               start_worker, stop, wait_for)

PYTHON = sys.executable


# -- the stack ---------------------------------------------------------------------------------------------------


class Stack:
    """Tansu, optionally the embedded LLM server, and workers, on free ports in a temporary directory."""

    def __init__(self, name: str, *, keep: bool = False) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"qastream-bench-{name}-"))
        self.logs = str(self.workdir / "logs")
        self.keep = keep
        self.broker_port: Optional[int] = None
        self.llm_port: Optional[int] = None
        self.web_port: Optional[int] = None
        self.worker: Optional[subprocess.Popen] = None
        self._processes: list[tuple[str, subprocess.Popen]] = []

    # -- processes
    def start_broker(self) -> str:
        self.broker_port = free_port()
        self._processes.append(("tansu", start_tansu("127.0.0.1", self.broker_port,
                                                     log=log_file(self.logs, "tansu"))))
        return self.broker_url

    def start_llm(self, *, latency: float, parallel: int, max_queue: int = 4096) -> str:
        self.llm_port = free_port()
        self._processes.append(("llm", start_llm_server(
            "127.0.0.1", self.llm_port, backend="echo", model="smollm2",
            extra=["--latency", str(latency), "--parallel", str(parallel), "--max-queue", str(max_queue)],
            log=log_file(self.logs, "llm"), env=clean_env())))
        return self.llm_url

    def env(self, **settings: Any) -> dict[str, str]:
        """A worker's environment: nothing inherited from ``QASTREAM_*``, this stack's addresses, ``settings``."""
        if self.web_port is None:
            self.web_port = free_port()
        env = clean_env()
        env.update({
            "QASTREAM_BROKER_URL": self.broker_url,
            "QASTREAM_WEB_PORT": str(self.web_port),
            "QASTREAM_DATA_DIR": str(self.workdir / "var"),
            "QASTREAM_LOG_LEVEL": "warning",
        })
        if self.llm_port is not None:
            env["QASTREAM_OLLAMA_URL"] = self.llm_url
        env.update({f"QASTREAM_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in settings.items()})
        return env

    def start_worker(self, *, script: Optional[str] = None, **settings: Any) -> subprocess.Popen:
        """Start a worker and wait for ``/health`` (tables recovered, partitions assigned).

        ``script`` runs another entry point with the same CLI (``bench/acceptance_worker.py``).
        """
        env = self.env(**settings)
        log = log_file(self.logs, f"worker-{len(self._processes)}")
        if script is None:
            self.worker = start_worker(env, web_host="127.0.0.1", web_port=self.web_port, log=log)
        else:
            self.worker = subprocess.Popen([PYTHON, script, "worker", "-l", "info"], env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT))
            wait_for(lambda: http_ok(f"{self.url}/health"), self.worker, "worker", timeout=180)
        self._processes.append(("worker", self.worker))
        return self.worker

    def stop_worker(self, *, hard: bool = False) -> None:
        if self.worker is not None:
            stop(self.worker, "worker", hard=hard, timeout=15)
            self._processes = [(n, p) for n, p in self._processes if p is not self.worker]
            self.worker = None

    def process(self, name: str) -> subprocess.Popen:
        """The running process started as ``name`` (``tansu``, ``llm``, ``worker``, or a spawned name)."""
        return next(p for n, p in self._processes if n == name)

    def spawn(self, name: str, args: Sequence[str], env: Optional[dict[str, str]] = None) -> subprocess.Popen:
        """Start another process of the benchmark, logging to ``logs/name.log``; stopped with the stack."""
        process = subprocess.Popen(list(args), env=env or clean_env(), stdout=log_file(self.logs, name),
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT))
        self._processes.append((name, process))
        return process

    def close(self) -> None:
        for name, process in reversed(self._processes):
            stop(process, name, timeout=15)
        self._processes.clear()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print(f"kept {self.workdir}", file=sys.stderr)

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- addresses and files
    @property
    def broker_url(self) -> str:
        return f"kafka://127.0.0.1:{self.broker_port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def llm_url(self) -> str:
        return f"http://127.0.0.1:{self.llm_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def db_path(self) -> Path:
        return self.workdir / "var" / "qastream.db"

    def qastream(self, *args: str, **settings: Any) -> str:
        """Run a ``qastream`` command with this stack's settings; returns its output."""
        done = subprocess.run([PYTHON, "-m", "qastream", *args], env=self.env(**settings), cwd=str(ROOT),
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"qastream {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout


def clean_env() -> dict[str, str]:
    """The environment without ``QASTREAM_*`` settings, so a developer's shell cannot change a benchmark."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QASTREAM_")}


# -- HTTP and the database -------------------------------------------------------------------------------------


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def post_json(url: str, body: Any, timeout: float = 10) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def sqlite_scalar(path: Path, sql: str) -> Any:
    """One value from the worker's SQLite file (WAL: reading never blocks the writer)."""
    if not path.exists():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as connection:
        try:
            return connection.execute(sql).fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not there yet
            return None


def sqlite_times(path: Path, sql: str) -> list[float]:
    """Epoch seconds of a datetime column (SQLAlchemy stores UTC as naive text in SQLite)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as connection:
        rows = connection.execute(sql).fetchall()
    return sorted(_epoch(row[0]) for row in rows)


def _epoch(value: str) -> float:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll ``predicate`` until true; returns the seconds waited, raises after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_stored(stack: Stack, count: int, timeout: float) -> float:
    """Wait until ``count`` answers are in the worker's database."""
    return wait_until(lambda: (sqlite_scalar(stack.db_path, "SELECT count(*) FROM responses") or 0) >= count,
                      timeout, f"{count} stored answers")


def completion_times(stack: Stack) -> list[float]:
    """When each answer was stored (the store stage's batch time), sorted."""
    return sqlite_times(stack.db_path, "SELECT created_at FROM responses")


# -- broker ------------------------------------------------------------------------------------------------------


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
    from qastream.broker import faust_options
    from qastream.settings import Settings

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


# -- statistics ------------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> Optional[float]:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def steady_rate(times: Sequence[float], low: float = 0.1, high: float = 0.9) -> float:
    """Completions per second in the steady state: least-squares slope of the completion count over time,
    fitted to the completions between the ``low`` and ``high`` fractions of them (ramp-up and drain left out).

    A fit rather than count/time between two completions, because completions can come in waves (C LLM
    slots answering together every 2.5 s) and two arbitrary points inside waves bias the quotient.
    """
    ordered = sorted(times)
    first, last = int(len(ordered) * low), max(int(len(ordered) * high), int(len(ordered) * low) + 2)
    xs = ordered[first:last]
    ys = list(range(first, first + len(xs)))
    if len(xs) < 2 or xs[-1] == xs[0]:
        raise ValueError("too few distinct completion times for a rate")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of a figure over runs."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def fmt(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_summary(title: str, runs: list[dict[str, Any]], fields: Sequence[tuple[str, str, int]]) -> None:
    """``min / median / max`` of each ``(key, label, digits)`` over the runs."""
    print(f"{title}: {len(runs)} run(s), min / median / max")
    for key, label, digits in fields:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            s = spread(values)
            print(f"  {label:<44} {fmt(s['min'], digits):>10} {fmt(s['median'], digits):>10} "
                  f"{fmt(s['max'], digits):>10}")


def machine() -> dict[str, Any]:
    """Cores, memory and load: the context every figure needs."""
    memory = None
    try:
        with open("/proc/meminfo") as f:
            total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        memory = f"{total_kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {"cores": os.cpu_count(), "memory": memory, "load_avg_1m": round(os.getloadavg()[0], 2)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[float, float]:
    """(idle, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (values[3] + values[4]) / tick, sum(values) / tick


class CpuMeter:
    """CPU use of some processes and of the machine over a block, in % of one core."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.result: dict[str, float] = {}

    def __enter__(self) -> "CpuMeter":
        self._started = time.monotonic()
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine = machine_ticks()
        return self

    def __exit__(self, *exc: Any) -> None:
        wall = time.monotonic() - self._started
        for name, pid in self.pids.items():
            try:
                self.result[f"{name}_cpu_pct"] = round(100.0 * (cpu_seconds(pid) - self._before[name]) / wall, 1)
            except (FileNotFoundError, ProcessLookupError):
                pass
        idle, total = machine_ticks()
        busy = 1.0 - (idle - self._machine[0]) / max(total - self._machine[1], 1e-9)
        self.result["machine_busy_pct"] = round(100.0 * busy * (os.cpu_count() or 1), 1)


def print_machine(name: str) -> None:
    print(json.dumps({"benchmark": name, **machine()}), flush=True)


# -- the load generator (its own process) ---------------------------------------------------------------------


def query_body(text: str, reference: Optional[str]) -> bytes:
    body: dict[str, Any] = {"question_text": text}
    if reference is not None:
        body["original_answer"] = reference
    return json.dumps(body).encode()


def run_loadgen(spec: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run the load generator in its own process with ``spec``; returns its result.

    ``spec``: ``url`` (``http://host:port``), ``path``; ``mode`` ``open`` (``rate`` per second for
    ``duration`` s) or ``closed`` (``concurrency`` clients for ``duration`` s); ``bodies``:
    ``{"unique": token}`` (a new question each request) or ``{"repeat": [texts...]}`` (random repeats);
    ``max_connections``; ``request_timeout``; ``dump`` (a file for every request's scheduled time and
    latency, to look for stalls).
    """
    done = subprocess.run([PYTHON, __file__, "loadgen", json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT))
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class _Bodies:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.unique = spec.get("unique")
        self.repeat = spec.get("repeat")
        self.reference = spec.get("reference", "same")
        self._random = random.Random(1)

    def body(self, i: int) -> bytes:
        if self.unique is not None:
            text = f"Load {self.unique} question {i}: what does subsystem {i % 997} of the pipeline do?"
            return query_body(text, text if self.reference == "same" else None)
        text = self._random.choice(self.repeat)
        return query_body(text, text)


async def _loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    from urllib.parse import urlparse

    target = urlparse(spec["url"])
    host, port, path = target.hostname, target.port, spec.get("path", "/query")
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            "Content-Length: ").encode()
    bodies = _Bodies(spec["bodies"])
    max_connections = int(spec.get("max_connections", 256))
    request_timeout = float(spec.get("request_timeout", 30))
    loop = asyncio.get_running_loop()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    waiters: list[asyncio.Future] = []
    opened = 0
    latencies: list[float] = []
    lateness: list[float] = []
    statuses: Counter[str] = Counter()
    by_status: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    last_done = 0.0
    dump: Optional[list] = [] if spec.get("dump") else None

    async def acquire():
        nonlocal opened
        if idle:
            return idle.pop()
        if opened < max_connections:
            opened += 1
            try:
                return await asyncio.open_connection(host, port)
            except OSError:
                opened -= 1
                raise
        future = loop.create_future()
        waiters.append(future)
        return await future

    def release(connection) -> None:
        while waiters:
            future = waiters.pop(0)
            if not future.done():
                future.set_result(connection)
                return
        idle.append(connection)

    async def exchange(connection, body: bytes) -> int:
        reader, writer = connection
        writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
        header = await reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        if length:
            await reader.readexactly(length)
        return status

    async def one(i: int, scheduled: float) -> None:
        nonlocal opened, last_done
        dispatched = time.perf_counter()
        lateness.append((dispatched - scheduled) * 1000.0)
        try:
            connection = await acquire()
        except OSError as exc:
            errors[type(exc).__name__] += 1
            return
        try:
            status = await asyncio.wait_for(exchange(connection, bodies.body(i)), request_timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
            errors[type(exc).__name__] += 1
            connection[1].close()
            opened -= 1
            if waiters:  # let a waiting request open a fresh connection
                try:
                    fresh = await asyncio.open_connection(host, port)
                    opened += 1
                    release(fresh)
                except OSError:
                    pass
            return
        now = time.perf_counter()
        latencies.append((now - dispatched) * 1000.0)
        if dump is not None:
            dump.append((round(scheduled - started, 4), round((now - dispatched) * 1000.0, 3)))
        statuses[str(status)] += 1
        by_status.setdefault(str(status), []).append((now - dispatched) * 1000.0)
        last_done = now
        release(connection)

    duration = float(spec["duration"])
    tasks: list[asyncio.Task] = []
    started = time.perf_counter() + 0.05
    if spec["mode"] == "open":
        rate = float(spec["rate"])
        total = int(rate * duration)
        i = 0
        while i < total:
            now = time.perf_counter()
            while i < total and started + i / rate <= now:
                tasks.append(loop.create_task(one(i, started + i / rate)))
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
    else:
        counter = iter(range(10 ** 9))
        deadline = started + duration

        async def client() -> None:
            while time.perf_counter() < deadline:
                await one(next(counter), time.perf_counter())

        await asyncio.sleep(max(0.0, started - time.perf_counter()))
        tasks = [loop.create_task(client()) for _ in range(int(spec["concurrency"]))]
    done, not_done = await asyncio.wait(tasks, timeout=duration + request_timeout + 10) if tasks else (set(), set())
    for task in not_done:
        task.cancel()
    for _, writer in idle:
        writer.close()
    elapsed = (last_done or time.perf_counter()) - started
    if dump is not None:
        Path(spec["dump"]).write_text(json.dumps(sorted(dump)))
    ok = sum(n for s, n in statuses.items() if s.startswith("2"))
    return {
        "mode": spec["mode"], "offered_per_s": spec.get("rate"), "concurrency": spec.get("concurrency"),
        "requests": len(latencies) + sum(errors.values()) + len(not_done), "responses": len(latencies),
        "ok": ok, "statuses": dict(statuses), "errors": dict(errors), "unfinished": len(not_done),
        "seconds": round(elapsed, 3), "achieved_per_s": round(len(latencies) / elapsed, 1) if elapsed > 0 else None,
        "connections": opened,
        "p50_ms": _round(percentile(latencies, 50)), "p90_ms": _round(percentile(latencies, 90)),
        "p99_ms": _round(percentile(latencies, 99)), "max_ms": _round(max(latencies) if latencies else None),
        "late_p99_ms": _round(percentile(lateness, 99)),
        "latency_ms_by_status": {s: {"p50": _round(percentile(v, 50)), "p99": _round(percentile(v, 99)),
                                     "max": _round(max(v))} for s, v in sorted(by_status.items())},
    }


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


# -- wrk (closed-loop saturation) ------------------------------------------------------------------------------------

WRK_SCRIPT = """
local counter = 0
local token = "%(token)s"
request = function()
  counter = counter + 1
  local text = string.format("Wrk %%s question %%d: what does subsystem %%d of the pipeline do?", token, counter,
                             counter %% 997)
  local body = string.format('{"question_text": "%%s", "original_answer": "%%s"}', text, text)
  return wrk.format("POST", "/query", {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %%d, "duration_us": %%d, "status_errors": %%d, "connect": %%d, ' ..
    '"read": %%d, "write": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, *, connections: int, seconds: int, token: str, threads: int = 1) -> dict[str, Any]:
    """Closed-loop saturation with ``wrk``: unique questions, ``connections`` in flight."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"token": token})
    try:
        done = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                               "--timeout", "10s", "-s", script.name, f"{url}/query"],
                              capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(script.name)
    line = next((l for l in done.stdout.splitlines() if l.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line[len("WRKJSON "):])
    seconds_run = raw["duration_us"] / 1e6
    errors = {k: raw[k] for k in ("status_errors", "connect", "read", "write", "timeout") if raw[k]}
    return {
        "mode": "closed (wrk)", "concurrency": connections, "requests": raw["requests"],
        "responses": raw["requests"], "errors": errors, "seconds": round(seconds_run, 3),
        "achieved_per_s": round(raw["requests"] / seconds_run, 1),
        "ok": raw["requests"] - raw["status_errors"],
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
    }


# -- profiles --------------------------------------------------------------------------------------------------------


def py_spy() -> Optional[str]:
    """The ``py-spy`` next to this interpreter (installed by ``make bench``), or on the PATH."""
    local = Path(PYTHON).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@contextmanager
def profiling(pid: int, out: Path, *, rate: int = 100) -> Iterator[None]:
    """Sample ``pid`` with py-spy (raw collapsed stacks at ``out``) while the block runs."""
    binary = py_spy()
    if binary is None:
        print("py-spy is not installed (make bench installs it): no profile", file=sys.stderr)
        yield
        return
    process = subprocess.Popen([binary, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                                "--nonblocking", "--output", str(out), "--duration", "3600"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield
    finally:
        process.send_signal(2)  # SIGINT: py-spy writes what it has and exits
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


#: Frames every sample of a worker passes through (the CLI, the event loop, thread start-up): as
#: "total" entries they say nothing, so the inclusive ranking leaves them out.
_SCAFFOLDING = ("click/", "runpy", "<module>", "asyncio/base_events.py", "asyncio/events.py", "mode/worker.py",
                "faust/cli/", "threading.py", "concurrent/futures/thread.py", "faust/app/base.py",
                "qastream/app.py", "qastream/__main__.py")


def top_entries(collapsed: Path, n: int = 10) -> dict[str, list[tuple[str, float]]]:
    """The ``n`` functions with the most samples on top of the stack (self) and anywhere in it (total).

    Shares are of all samples.  Frames are ``function (file)`` with the path shortened to the package;
    the inclusive ranking leaves out the scaffolding every sample passes through.
    """
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    if not collapsed.exists():
        return {"self": [], "total": []}
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        weight = int(count)
        frames = [_short(f) for f in stack.split(";") if not f.startswith("process ") and
                  not f.startswith("thread ")]
        if not frames:
            continue
        samples += weight
        self_counts[frames[-1]] += weight
        for frame in set(frames):
            if not any(marker in frame for marker in _SCAFFOLDING):
                total_counts[frame] += weight
    share = lambda c: [(name, round(100.0 * k / samples, 1)) for name, k in c.most_common(n)]  # noqa: E731
    return {"self": share(self_counts), "total": share(total_counts), "samples": samples}


def _short(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def print_profile(profile: dict[str, Any], n: int = 10) -> None:
    print(f"profile of the worker ({profile.get('samples', 0)} samples): top {n} by own time (self) and "
          "by time including callees (total), % of samples")
    for kind in ("self", "total"):
        print(f"  {kind}:")
        for name, share in profile.get(kind, [])[:n]:
            print(f"    {share:5.1f}%  {name}")


# -- entry point of the load generator process ------------------------------------------------------------------------

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "loadgen":
        print(json.dumps(asyncio.run(_loadgen(json.loads(sys.argv[2])))))
    else:
        sys.exit("usage: common.py loadgen SPEC_JSON  (the benchmarks call this themselves)")
