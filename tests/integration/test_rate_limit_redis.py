"""The Redis rate limiter against the real server: rate * t + burst, across processes, and without Redis.

Bounds are counted against measured time, never against what a quiet
machine would do: the upper bound uses Redis' own clock (``TIME`` before
the first request and after the last), and the lower bound subtracts
every token that measured stalls of this process could have let overflow
a full bucket.  Each test uses its own key prefix and deletes its keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis

from qastream.devtools.embedded import free_port
from qastream.services.limiter import Limiter

REPO = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("rate_limit_client.py")


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"test-ratelimit-{uuid.uuid4().hex[:12]}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=name + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def server_time(redis_url: str) -> float:
    """Redis' clock, the one the Lua script reads, in seconds."""
    client = redis.Redis.from_url(redis_url)
    seconds, micros = client.time()
    client.close()
    return seconds + micros / 1e6


def lower_bound(attempts: list[tuple[float, float, bool]], rate: float, burst: int) -> float:
    """Fewest tokens the bucket must have handed out, from each attempt's (start, end, allowed).

    The script ran somewhere inside each attempt, so the bucket's clock moved at
    least from the end of the first attempt to the start of the last one.  It
    refilled ``rate`` tokens a second of that, less what overflowed a full bucket
    in a gap between attempts: at most the gap's refill beyond the room the
    bucket had left (one token after a request that took one, ``burst - 1``
    after a refusal, which left it under one).  The last attempt was refused,
    so less than one token is left unspent.
    """
    lost = 0.0
    for (start, _, allowed), (_, next_end, _) in zip(attempts, attempts[1:]):
        room = 1 if allowed else burst - 1
        lost += max(0.0, rate * (next_end - start) - room)
    return burst + rate * (attempts[-1][0] - attempts[0][1]) - lost - 1


async def test_the_shared_bucket_admits_rate_times_t_plus_burst(redis_url, prefix):
    rate, burst = 20.0, 10
    limiter = Limiter(redis_url, prefix=prefix)
    await limiter.on_start()
    try:
        begun = server_time(redis_url)
        attempts: list[tuple[float, float, bool]] = []
        deadline = time.monotonic() + 1.5
        while True:
            start = time.monotonic()
            retry_after = await limiter.take("k", rate, burst)
            end = time.monotonic()
            attempts.append((start, end, retry_after is None))
            if end >= deadline and retry_after is not None:
                break
            await asyncio.sleep(0.002)
        elapsed = server_time(redis_url) - begun
        allowed = sum(ok for _, _, ok in attempts)
        assert limiter.errors == 0 and not limiter.degraded    # Redis decided every request
        assert allowed <= rate * elapsed + burst + 1
        assert allowed >= lower_bound(attempts, rate, burst)
        assert allowed > burst                                  # the bucket refilled, not only the burst

        # Waiting the time it was told is enough (nobody else takes from this key).
        assert retry_after is not None and 0 < retry_after <= 1 / rate
        await asyncio.sleep(retry_after + 0.01)
        assert await limiter.take("k", rate, burst) is None
    finally:
        await limiter.on_stop()


async def test_a_bucket_key_expires_when_the_bucket_is_full_again(redis_url, prefix):
    rate, burst = 10.0, 3
    limiter = Limiter(redis_url, prefix=prefix)
    await limiter.on_start()
    try:
        for _ in range(burst):
            assert await limiter.take("k", rate, burst) is None
        assert await limiter.take("unlimited", None, burst) is None
        client = redis.Redis.from_url(redis_url)
        try:
            ttl_ms = client.pttl(prefix + "k")
            assert 0 < ttl_ms <= math.ceil(burst / rate * 1000)  # empty: full again in burst / rate s
            assert client.exists(prefix + "unlimited") == 0       # no limit, nothing stored
            await asyncio.sleep(ttl_ms / 1000 + 0.05)
            assert client.exists(prefix + "k") == 0
        finally:
            client.close()
    finally:
        await limiter.on_stop()


async def test_a_script_missing_from_redis_is_loaded_again(redis_url, prefix):
    """After a Redis restart its script cache is empty: EVALSHA fails and the script is loaded again.

    Emptying the shared server's script cache would hit other users of it, so the
    limiter is given a digest Redis never saw instead.
    """
    limiter = Limiter(redis_url, prefix=prefix)
    await limiter.on_start()
    try:
        limiter.script.sha = "0" * 40
        assert await limiter.take("k", 1.0, 1) is None
        assert await limiter.take("k", 1.0, 1) is not None
        assert limiter.errors == 0 and limiter.script.sha != "0" * 40
    finally:
        await limiter.on_stop()


async def test_the_limiter_starts_and_stops_as_a_service(redis_url, prefix):
    limiter = Limiter(redis_url, prefix=prefix)
    await limiter.start()
    try:
        assert await limiter.take("k", 1.0, 1) is None
        assert limiter.errors == 0
    finally:
        await limiter.stop()


def test_two_processes_share_one_bucket(redis_url, prefix):
    rate, burst, seconds = 50.0, 20, 2.0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(CLIENT), redis_url, prefix, "shared", str(rate), str(burst), str(seconds)]
    processes = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
    try:
        for process in processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        begun = server_time(redis_url)
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=120)[0] for process in processes]
        elapsed = server_time(redis_url) - begun
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert all(process.returncode == 0 for process in processes), outputs
    counts = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    assert all(c["errors"] == 0 for c in counts), counts              # Redis decided every request
    total = sum(c["allowed"] for c in counts)
    assert total <= rate * elapsed + burst + 1, (counts, elapsed)
    assert all(c["allowed"] > 0 for c in counts), counts
    assert total >= burst, counts                                      # refusals came only after the burst
    assert all(c["attempts"] > c["allowed"] for c in counts), counts   # both were refused at times


async def test_unreachable_redis_falls_back_to_in_process_buckets(caplog):
    caplog.set_level(logging.WARNING, logger="qastream.services.limiter")
    limiter = Limiter(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5, retry_seconds=60.0)
    await limiter.on_start()
    try:
        started = time.monotonic()
        results = [await limiter.take("k", 1.0, 3) for _ in range(5)]
        assert time.monotonic() - started < 5.0
    finally:
        await limiter.on_stop()
    assert results[:3] == [None] * 3
    assert all(r is not None and 0 < r <= 1.0 for r in results[3:])
    assert limiter.degraded and limiter.errors == 1                   # the start-up failure; then skipped
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "rate limiting without redis" in warnings[0]
