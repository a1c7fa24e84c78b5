"""The HTTP load generator (its own process) and ``wrk`` for closed-loop saturation.

:func:`run_loadgen` runs this file as ``python bench/loadgen.py loadgen SPEC``
so that the generator does not share the worker's event loop.  It is
open-loop (requests leave on a fixed schedule whatever the server does) or
closed-loop.  Latency counts from the moment a request is due to leave and
includes any wait for a free connection, so a slow server cannot hide its
queueing; the generator's own timer lateness (its sleeps wake on millisecond
ticks) is reported apart (``late_p99_ms``), not charged to the server.  It
speaks HTTP/1.1 on raw asyncio streams with keep-alive: an aiohttp client
costs several times more CPU per request, and on two cores the client's CPU
is the worker's.  :func:`run_wrk` drives Debian's ``wrk`` where closed-loop
saturation is wanted.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from stack import PYTHON, ROOT

from qastream.telemetry.stats import percentile  # importable: stack put the repository on sys.path


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
    ``method`` ``GET`` with ``paths`` (request i asks for ``paths[i % len(paths)]``; no ``bodies``);
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
    gets = ([f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() for p in spec["paths"]]
            if spec.get("method", "POST") == "GET" else None)
    bodies = _Bodies(spec.get("bodies", {}))
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

    def request(i: int) -> bytes:
        if gets is not None:
            return gets[i % len(gets)]
        body = bodies.body(i)
        return head + str(len(body)).encode() + b"\r\n\r\n" + body

    async def exchange(connection, message: bytes) -> int:
        reader, writer = connection
        writer.write(message)
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
            status = await asyncio.wait_for(exchange(connection, request(i)), request_timeout)
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
    line = next((text for text in done.stdout.splitlines() if text.startswith("WRKJSON ")), None)
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


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "loadgen":
        print(json.dumps(asyncio.run(_loadgen(json.loads(sys.argv[2])))))
    else:
        sys.exit("usage: loadgen.py loadgen SPEC_JSON  (the benchmarks call this themselves)")
