"""One worker's share of test_rate_limit_redis: take tokens from one key as fast as allowed.

``python rate_limit_client.py REDIS_URL PREFIX KEY RATE BURST SECONDS`` connects,
prints ``ready``, waits for a line on stdin (so both processes start
together), asks for tokens from a few concurrent tasks for SECONDS and
prints ``{"allowed": n, "attempts": n, "errors": n}`` as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from qastream.services.limiter import Limiter

#: Concurrent requests per process: the script must be atomic within a worker too.
TASKS = 4


async def main(url: str, prefix: str, key: str, rate: float, burst: int, seconds: float) -> dict[str, int]:
    limiter = Limiter(url, prefix=prefix)
    await limiter.on_start()
    counts = {"allowed": 0, "attempts": 0}
    try:
        print("ready", flush=True)
        sys.stdin.readline()
        deadline = time.monotonic() + seconds

        async def hammer() -> None:
            while time.monotonic() < deadline:
                counts["attempts"] += 1
                if await limiter.take(key, rate, burst) is None:
                    counts["allowed"] += 1
                await asyncio.sleep(0.001)  # keep ~1,000 requests/s per task: a shared machine

        await asyncio.gather(*(hammer() for _ in range(TASKS)))
    finally:
        await limiter.on_stop()
    return {**counts, "errors": limiter.errors}


if __name__ == "__main__":
    url, prefix, key, rate, burst, seconds = sys.argv[1:]
    print(json.dumps(asyncio.run(main(url, prefix, key, float(rate), int(burst), float(seconds)))), flush=True)
