"""Cache hits: latency of repeated questions answered from Redis and from the in-process cache.

One worker (instant echo LLM, scorer off) answers ``--questions`` unique
questions; the store stage caches each answer.  Then the load generator
(open loop, its own process) repeats random ones of them at ``--rate``
requests/s for ``--seconds`` and the worker answers each with 200 ``found``
from the cache.  First with Redis (``--redis-url``, 127.0.0.1:6379), then
with a worker restarted on the in-process cache (warmed by one pass: the
first repeat of each is answered from the database and cached).  The
worker's ``cache_info`` hit count must grow by the number of requests, so
every measured request was a cache hit.

The last line gives p50 / p99 of both (targets p50 <= 1 ms, p99 <= 5 ms).

    .venv/bin/python bench/cache.py [--runs 3] [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import run_loadgen  # noqa: E402
from runner import median_of, run_benchmark  # noqa: E402
from stack import Stack, get_json, post_json, wait_stored  # noqa: E402

from qastream.devtools.embedded import host_port, port_open  # noqa: E402


def texts_for(token: str, count: int) -> list[str]:
    return [f"Cache {token} question {i}: what does subsystem {i} of the pipeline do?" for i in range(count)]


def repeat(stack: Stack, texts: list[str], rate: float, seconds: float) -> dict:
    before = get_json(f"{stack.url}/metrics")["cache_info"]["hits"]
    result = run_loadgen({"url": stack.url, "mode": "open", "rate": rate, "duration": seconds,
                          "bodies": {"repeat": texts}, "max_connections": 64})
    hits = get_json(f"{stack.url}/metrics")["cache_info"]["hits"] - before
    if result["statuses"].get("200") != result["requests"] or hits != result["requests"]:
        raise RuntimeError(f"not every repeat was a cache hit ({hits} hits): {result}")
    return result


def one_run(args: argparse.Namespace, index: int) -> dict:
    token = uuid.uuid4().hex[:8]
    texts = texts_for(token, args.questions)
    redis_ok = port_open(*host_port(args.redis_url, 6379))
    result: dict = {"run": index}
    with Stack("cache", keep=args.keep) as stack:
        stack.start_broker()
        stack.start_llm(latency=0, parallel=64)
        common = dict(scorer_enabled=False, llm_concurrency=32, cache_ttl_seconds=3600)
        stack.start_worker(redis_url=args.redis_url if redis_ok else "", **common)
        for text in texts:  # accept every question once
            status, body = post_json(f"{stack.url}/query", {"question_text": text, "original_answer": text})
            if status != 202:
                raise RuntimeError(f"POST /query answered {status}: {body}")
        wait_stored(stack, args.questions, timeout=120)
        if redis_ok:
            r = repeat(stack, texts, args.rate, args.seconds)
            print(json.dumps({"run": index, "cache": "redis", **r}), flush=True)
            result.update(redis_p50_ms=r["p50_ms"], redis_p90_ms=r["p90_ms"], redis_p99_ms=r["p99_ms"],
                          redis_max_ms=r["max_ms"], redis_requests=r["requests"])
        else:
            print(f"Redis is not reachable at {args.redis_url}: measuring the in-process cache only",
                  file=sys.stderr)
        stack.stop_worker()
        stack.start_worker(redis_url="", **common)
        run_loadgen({"url": stack.url, "mode": "open", "rate": 500, "duration": len(texts) / 500,
                     "bodies": {"repeat": texts}})  # warm: database hits fill the in-process cache
        for text in texts:  # the random warm pass may miss some: make sure every one is cached
            post_json(f"{stack.url}/query", {"question_text": text, "original_answer": text})
        m = repeat(stack, texts, args.rate, args.seconds)
        print(json.dumps({"run": index, "cache": "memory", **m}), flush=True)
        result.update(memory_p50_ms=m["p50_ms"], memory_p90_ms=m["p90_ms"], memory_p99_ms=m["p99_ms"],
                      memory_max_ms=m["max_ms"], memory_requests=m["requests"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--questions", type=int, default=200, help="distinct questions answered, then repeated")
    parser.add_argument("--rate", type=float, default=200, help="repeated requests per second (open loop)")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    def conclude(runs: list[dict]) -> str:
        parts = []
        if all(r.get("redis_p50_ms") is not None for r in runs):
            parts.append(f"Redis p50 {median_of(runs, 'redis_p50_ms'):.2f} ms / "
                         f"p99 {median_of(runs, 'redis_p99_ms'):.2f} ms")
        parts.append(f"in-process p50 {median_of(runs, 'memory_p50_ms'):.2f} ms / "
                     f"p99 {median_of(runs, 'memory_p99_ms'):.2f} ms")
        return f"cache hits at {args.rate:g} req/s: " + "; ".join(parts) + " (targets p50 <= 1 ms, p99 <= 5 ms)"

    run_benchmark("cache", args.runs, lambda index: one_run(args, index), [
        ("redis_p50_ms", "Redis: p50 ms (target <= 1)", 3), ("redis_p90_ms", "Redis: p90 ms", 3),
        ("redis_p99_ms", "Redis: p99 ms (target <= 5)", 3), ("redis_max_ms", "Redis: max ms", 3),
        ("memory_p50_ms", "in-process: p50 ms (target <= 1)", 3), ("memory_p90_ms", "in-process: p90 ms", 3),
        ("memory_p99_ms", "in-process: p99 ms (target <= 5)", 3), ("memory_max_ms", "in-process: max ms", 3),
    ], conclude, title="cache hits")


if __name__ == "__main__":
    main()
