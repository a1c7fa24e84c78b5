"""Capacity use of a slow LLM, and qastream against seed-style sequential consumers, in one run.

The embedded LLM server (echo backend) answers after ``--latency`` seconds
(2.5) with ``--slots`` requests at once (32), so the LLM can do at most
slots / latency questions/s.  qastream (one worker, LLM concurrency = slots,
real scorer) gets ``--questions`` unique questions through ``POST /query``;
each reference answer is its question text, so every answer passes at the
first attempt.  Capacity use = steady-state completions/s / (slots / latency).

Then, against the same LLM server and broker, two seed-style consumers
(``bench/baseline_consumer.py``: consume one, call, score, store, produce; no
concurrency) answer ``--baseline-questions``; the last line is
qastream / baseline.

Steady state = least-squares slope of stored answers over time across the
middle 80 % of them (ramp-up and drain left out), for both systems.

    .venv/bin/python bench/capacity.py [--runs 3] [--questions 600] [--slots 32] [--latency 2.5]
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_io import create_topics, produce  # noqa: E402
from loadgen import run_loadgen  # noqa: E402
from measure import steady_rate  # noqa: E402
from runner import median_of, run_benchmark  # noqa: E402
from stack import PYTHON, Stack, completion_times, get_json, sqlite_scalar, wait_stored, wait_until  # noqa: E402

from qastream.policy.ids import question_id  # noqa: E402

BASELINE_TOPIC, BASELINE_RESULTS = "baseline-questions", "baseline-results"


def run_qastream(stack: Stack, args: argparse.Namespace, token: str) -> dict:
    stack.start_worker(llm_concurrency=args.slots, scorer_enabled=True)
    # Submitting 600 questions takes well under a second; open loop at 1,000/s.
    load = run_loadgen({"url": stack.url, "mode": "open", "rate": 1000, "duration": args.questions / 1000,
                        "bodies": {"unique": f"capacity-{token}"}, "max_connections": 64})
    if load["statuses"].get("202") != args.questions:
        raise RuntimeError(f"not every question was accepted: {load}")
    wait_stored(stack, args.questions, timeout=args.questions * args.latency / args.slots * 4 + 120)
    times = completion_times(stack)
    passed = sqlite_scalar(stack.db_path, "SELECT count(*) FROM responses WHERE processing_attempts = 1 "
                                          "AND NOT low_quality")
    scorer = None
    try:
        scorer = get_json(f"{stack.url}/metrics").get("scorer")
    except Exception:  # the figure is informative only
        pass
    stack.stop_worker()
    return {"rate": steady_rate(times), "span_s": times[-1] - times[0], "first_attempt_pass": passed,
            "scorer": scorer}


def run_baseline(stack: Stack, args: argparse.Namespace, token: str) -> dict:
    create_topics(stack.bootstrap, {BASELINE_TOPIC: 2, BASELINE_RESULTS: 2})
    db = stack.workdir / "baseline.db"
    consumers = [stack.spawn(f"baseline-{p}", [
        PYTHON, str(Path(__file__).parent / "baseline_consumer.py"), "--bootstrap", stack.bootstrap,
        "--topic", BASELINE_TOPIC, "--partition", str(p), "--results", BASELINE_RESULTS,
        "--ollama-url", stack.llm_url, "--database-url", f"sqlite:///{db}"]) for p in (0, 1)]
    logs = [Path(stack.logs) / f"baseline-{p}.log" for p in (0, 1)]
    wait_until(lambda: all(log.exists() and b"ready" in log.read_bytes() for log in logs) or
               any(c.poll() is not None for c in consumers), 180, "the baseline consumers")
    if any(c.poll() is not None for c in consumers):
        raise RuntimeError(f"a baseline consumer exited: see {stack.logs}")
    records = []
    for i in range(args.baseline_questions):
        text = f"Baseline {token} question {i}: what does subsystem {i} of the pipeline do?"
        qid = question_id(text)
        value = json.dumps({"question_id": qid, "question_text": text, "original_answer": text}).encode()
        records.append((BASELINE_TOPIC, qid.encode(), value, i % 2))  # an even split
    produce(stack.bootstrap, records, concurrency=1, settings={})
    count = "SELECT count(*) FROM baseline_responses"
    wait_until(lambda: (sqlite_scalar(db, count) or 0) >= args.baseline_questions,
               args.baseline_questions * args.latency * 2 + 120, "the baseline answers")
    times = sqlite_times_epoch(db)
    per_consumer = {p: sqlite_scalar(db, f"SELECT count(*) FROM baseline_responses WHERE consumer = {p}")
                    for p in (0, 1)}
    for c in consumers:
        c.terminate()
    return {"rate": steady_rate(times), "span_s": times[-1] - times[0], "per_consumer": per_consumer}


def sqlite_times_epoch(db: Path) -> list[float]:
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return sorted(row[0] for row in connection.execute("SELECT stored_at FROM baseline_responses"))


def one_run(args: argparse.Namespace, index: int) -> dict:
    token = uuid.uuid4().hex[:8]
    capacity = args.slots / args.latency
    with Stack("capacity", keep=args.keep) as stack:
        stack.start_broker()
        stack.start_llm(latency=args.latency, parallel=args.slots)
        q = run_qastream(stack, args, token)
        b = run_baseline(stack, args, token)
    result = {
        "run": index, "llm_capacity_per_s": round(capacity, 3),
        "qastream_per_s": round(q["rate"], 3), "capacity_use": round(q["rate"] / capacity, 3),
        "qastream_span_s": round(q["span_s"], 1), "first_attempt_pass": q["first_attempt_pass"],
        "scorer_pairs_per_s": (q["scorer"] or {}).get("pairs_per_second"),
        "baseline_per_s": round(b["rate"], 3), "baseline_span_s": round(b["span_s"], 1),
        "baseline_per_consumer": b["per_consumer"],
        "speedup": round(q["rate"] / b["rate"], 2),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--questions", type=int, default=600)
    parser.add_argument("--baseline-questions", type=int, default=40)
    parser.add_argument("--slots", type=int, default=32, help="LLM requests served at once (C)")
    parser.add_argument("--latency", type=float, default=2.5, help="seconds per LLM answer")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = parser.parse_args()
    run_benchmark("capacity", args.runs, lambda index: one_run(args, index), [
        ("llm_capacity_per_s", "LLM capacity, questions/s (slots / latency)", 2),
        ("qastream_per_s", "qastream steady-state, questions/s", 2),
        ("capacity_use", "capacity use (target >= 0.9)", 3),
        ("baseline_per_s", "seed-style baseline (2 consumers), questions/s", 3),
        ("speedup", "qastream / baseline (target >= 10)", 1),
    ], lambda runs: (f"capacity use {median_of(runs, 'capacity_use'):.3f} (target >= 0.9); qastream / baseline = "
                     f"{median_of(runs, 'speedup'):.1f}x (target >= 10x)"))


if __name__ == "__main__":
    main()
