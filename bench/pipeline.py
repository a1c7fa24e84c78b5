"""End-to-end throughput: questions/s from POST /query to stored answer, echo LLM backend.

Starts its own Tansu broker, echo LLM server and one worker (SQLite, in-process
cache) on free ports, submits unique questions over HTTP as fast as the API
takes them, and waits until every one is stored.  The reference answer is the
question itself, so every answer passes at the first attempt and the figure
measures the pipeline, not regeneration.

    .venv/bin/python bench/pipeline.py [--questions 300] [--latency 0] [--no-scorer]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qastream.devtools.embedded import free_port, log_file, start_llm_server, start_tansu, start_worker, stop  # noqa: E402


async def submit(session: aiohttp.ClientSession, url: str, questions: list[str], concurrency: int) -> float:
    """POST every question; returns the seconds it took."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for q in questions:
        queue.put_nowait(q)

    async def client() -> None:
        while not queue.empty():
            question = queue.get_nowait()
            async with session.post(f"{url}/query", json={"question_text": question,
                                                          "original_answer": question}) as response:
                if response.status != 202:
                    raise RuntimeError(f"POST /query answered {response.status}: {await response.text()}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started


async def wait_stored(session: aiohttp.ClientSession, url: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with session.get(f"{url}/metrics") as response:
            if (await response.json())["total_responses"] >= count:
                return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"not all {count} questions were stored after {timeout:.0f} s")


async def measure(url: str, count: int, concurrency: int) -> tuple[float, float]:
    token = uuid.uuid4().hex[:8]
    questions = [f"What does module {i} of run {token} compute?" for i in range(count)]
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        submit_seconds = await submit(session, url, questions, concurrency)
        await wait_stored(session, url, count, timeout=max(120.0, count * 2.0))
        return submit_seconds, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the echo LLM takes per answer")
    parser.add_argument("--llm-parallel", type=int, default=64, help="requests the LLM server serves at once")
    parser.add_argument("--concurrency", type=int, default=32, help="HTTP clients submitting at once")
    parser.add_argument("--no-scorer", action="store_true", help="store answers unscored")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="qastream-bench-"))
    logs = str(workdir / "logs")
    broker_port, llm_port, web_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QASTREAM_")}
    env.update({
        "QASTREAM_BROKER_URL": f"kafka://127.0.0.1:{broker_port}",
        "QASTREAM_OLLAMA_URL": f"http://127.0.0.1:{llm_port}",
        "QASTREAM_WEB_PORT": str(web_port),
        "QASTREAM_DATA_DIR": str(workdir / "var"),
        "QASTREAM_LLM_CONCURRENCY": str(args.llm_parallel),
        "QASTREAM_SCORER_ENABLED": "false" if args.no_scorer else "true",
    })
    processes = []
    try:
        processes.append(("broker", start_tansu("127.0.0.1", broker_port, log=log_file(logs, "tansu"))))
        processes.append(("llm", start_llm_server("127.0.0.1", llm_port, backend="echo", model="smollm2",
                                                  extra=["--latency", str(args.latency),
                                                         "--parallel", str(args.llm_parallel)],
                                                  log=log_file(logs, "llm"), env=env)))
        processes.append(("worker", start_worker(env, web_host="127.0.0.1", web_port=web_port,
                                                 log=log_file(logs, "worker"))))
        url = f"http://127.0.0.1:{web_port}"
        submit_seconds, total_seconds = asyncio.run(measure(url, args.questions, args.concurrency))
    finally:
        for name, process in reversed(processes):
            stop(process, name)
    rate = args.questions / total_seconds
    print(json.dumps({
        "benchmark": "pipeline", "cores": os.cpu_count(), "questions": args.questions,
        "llm_latency_s": args.latency, "scorer": not args.no_scorer,
        "accept_rate_per_s": round(args.questions / submit_seconds, 1),
        "end_to_end_seconds": round(total_seconds, 2),
    }))
    print(f"pipeline: {rate:.1f} questions/s end to end on {os.cpu_count()} cores "
          f"({args.questions} questions, echo latency {args.latency:g} s, scorer {'off' if args.no_scorer else 'on'})")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
