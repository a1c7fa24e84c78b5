"""An interactive question behind a 2,000-question bulk backlog: how long it takes, against a plain queue.

The embedded LLM server (echo backend) answers after ``--latency`` seconds
(1.0) with ``--slots`` requests at once (8); the worker has as many LLM
slots.  ``--bulk`` questions (2,000) are loaded on the bulk lane with
``qastream load --via kafka --lane bulk`` before the worker starts, so its
first fetches find the whole backlog.  Once the LLM is busy with bulk calls,
``--questions`` interactive questions (5) are asked through ``POST /query``,
one after the other, each once the previous one is answered and a random
pause has passed.

For each: the time from just before the request to its answer's row in the
database (the store stage's clock, same machine), and what a single FIFO
queue would have given it -- the bulk questions still pending when it was
asked, divided by the rate the LLM drains them (measured over the run), plus
one call.  The last line is the ratio of the medians: FIFO / priority.

    .venv/bin/python bench/priority.py [--runs 1] [--bulk 2000] [--questions 5] [--slots 8] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import median_of, run_benchmark  # noqa: E402
from stack import Stack, get_json, post_json, sqlite_scalar, sqlite_times, wait_until  # noqa: E402

from qastream.telemetry.stats import median  # noqa: E402


def llm_completions(stack: Stack) -> int:
    return get_json(f"{stack.llm_url}/admin/stats").get("completions", 0)


def answered_at(stack: Stack, qid: str) -> float | None:
    times = sqlite_times(stack.db_path, f"SELECT created_at FROM responses WHERE question_id = '{qid}'")
    return times[0] if times else None


def one_run(args: argparse.Namespace) -> dict:
    token = uuid.uuid4().hex[:8]
    with Stack("priority") as stack:
        stack.start_broker()
        stack.start_llm(latency=args.latency, parallel=args.slots)
        settings = {"llm_concurrency": args.slots, "scorer_enabled": False}
        dataset = stack.workdir / "bulk.jsonl"
        dataset.write_text("".join(json.dumps({"question_text": f"What is item {i} of backlog {token}?",
                                               "original_answer": f"Item {i} of backlog {token}."}) + "\n"
                                   for i in range(args.bulk)))
        stack.qastream("load", str(dataset), "--via", "kafka", "--lane", "bulk", "--concurrency", "32", **settings)
        stack.start_worker(**settings)
        wait_until(lambda: llm_completions(stack) >= 2 * args.slots, 180, "the LLM to be busy with bulk calls")
        began, calls_before = time.time(), llm_completions(stack)
        waits, fifo_backlogs = [], []
        # Random gaps: the echo LLM answers every call in exactly --latency, so bulk calls run in waves, and a
        # fixed gap equal to the latency would ask every question at the same point of a wave.
        pauses = random.Random(args.seed)
        for i in range(args.questions):
            backlog = sqlite_scalar(stack.db_path, "SELECT count(*) FROM questions WHERE status = 'pending'")
            asked = time.time()
            code, body = post_json(f"{stack.url}/query", {"question_text": f"Interactive question {i} {token}?"})
            if code != 202:
                raise RuntimeError(f"POST /query answered {code}: {body}")
            qid = body["question_id"]
            wait_until(lambda q=qid: answered_at(stack, q) is not None, 300, "the interactive answer", interval=0.05)
            waits.append((answered_at(stack, qid) or asked) - asked)
            fifo_backlogs.append(backlog)
            time.sleep(pauses.uniform(0.5 * args.pause, 1.5 * args.pause))
        drain_rate = (llm_completions(stack) - calls_before) / (time.time() - began)
        left = sqlite_scalar(stack.db_path, "SELECT count(*) FROM questions WHERE status = 'pending'")
    fifo = [backlog / drain_rate + args.latency for backlog in fifo_backlogs]
    return {"interactive_s": [round(w, 2) for w in waits], "interactive_median_s": median(waits),
            "fifo_median_s": median(fifo), "bulk_drain_per_s": round(drain_rate, 2), "bulk_pending_after": left}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--bulk", type=int, default=2000)
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--pause", type=float, default=1.0,
                        help="mean seconds between two interactive questions (uniform, 0.5x to 1.5x)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the pauses")
    args = parser.parse_args()

    def conclude(runs: list[dict]) -> str:
        ours, fifo = median_of(runs, "interactive_median_s"), median_of(runs, "fifo_median_s")
        if not ours or fifo is None:
            return "no ratio: nothing measured"
        return (f"interactive question behind {args.bulk:,} bulk questions ({args.slots} slots x {args.latency:g} s): "
                f"{ours:.2f} s with the priority lane vs {fifo:.0f} s in one FIFO queue = {fifo / ours:.0f}x faster")

    run_benchmark("priority", args.runs, lambda _: one_run(args),
                  [("interactive_median_s", "interactive question, median s", 2),
                   ("fifo_median_s", "same question in one FIFO queue, s", 0),
                   ("bulk_drain_per_s", "bulk questions answered per s", 2)], conclude)


if __name__ == "__main__":
    main()
