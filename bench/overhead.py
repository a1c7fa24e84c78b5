"""Overhead: questions/s through the whole graph with an instant LLM and no scoring, against a bare Faust relay.

qastream: ``--questions`` unique questions are loaded into the database and
questions-pending with ``qastream load --via kafka`` before the worker
starts (scorer off, echo LLM with no latency); the worker drains the
backlog through generate, validate and store, every stage reporting status
events that ``track`` folds into the tables.  A question is through when its
status becomes ``completed`` (the timestamp of that status changelog
record, which comes after the database write).  Rate = questions / the time
from the first answer generate produced to the last question through.  (Not a
fit over the middle of the completions: ``track`` can fall behind while every
stage runs and fold the rest of its backlog alone at the end, so completions
come faster at the end than the graph moves questions.)  Topic hops per question are counted from the
broker's end offsets afterwards: records on the graph's topics (consumed by
a stage) and on the table changelogs (written, not consumed) per question.
messages/s = questions/s x hops.

Relay: ``bench/relay_app.py``, a Faust app with as many topics as qastream
has hops per question, one forwarding agent per topic, qastream's Job
records, partition counts and broker options; the same number of questions
are preloaded into its first topic before it starts.  Rate = questions / the
time from the first record the first agent forwarded to the last record on
the last topic; messages/s = rate x hops.

A separate pass profiles the qastream worker with py-spy while it drains
and prints the top 10 entries.  The last line is qastream messages/s /
relay messages/s (target >= 0.5).

    .venv/bin/python bench/overhead.py [--runs 3] [--questions 10000] [--no-profile]
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_io import create_topics, end_offsets, produce, topic_records, topic_timestamps  # noqa: E402
from measure import CpuMeter  # noqa: E402
from profiling import print_profile, profiling, top_entries  # noqa: E402
from runner import median_of, run_benchmark  # noqa: E402
from stack import PYTHON, Stack, wait_stored, wait_until  # noqa: E402

from qastream.devtools.embedded import free_port  # noqa: E402
from qastream.models import Job  # noqa: E402
from qastream.policy.ids import question_id  # noqa: E402
from qastream.settings import Settings  # noqa: E402


def question_texts(token: str, count: int) -> list[str]:
    return [f"Overhead {token} question {i}: what does subsystem {i % 997} of the pipeline do?" for i in range(count)]


def qastream_drain(stack: Stack, texts: list[str], profile: Path | None = None) -> dict:
    data = stack.workdir / "questions.jsonl"
    data.write_text("".join(json.dumps({"question_text": t, "original_answer": t}) + "\n" for t in texts))
    stack.qastream("load", str(data), "--via", "kafka", "--concurrency", "64", scorer_enabled=False)
    worker = stack.start_worker(scorer_enabled=False)
    meter = CpuMeter(worker=worker.pid, llm=stack.process("llm").pid)
    with profiling(worker.pid, profile) if profile is not None else nullcontext(), meter:
        wait_stored(stack, len(texts), timeout=len(texts) + 120)
        # A question's last step is track folding its "completed" event into the status table, which
        # can trail the database write: wait for it, and time questions by it.
        status = f"{Settings().app_id}-status-changelog"
        wait_until(lambda: len(completed_times(stack, status)) >= len(texts), 300, "the status table")
    times = completed_times(stack, status)
    started = topic_timestamps(stack.bootstrap, Settings().topic_success)[0]
    stack.stop_worker()
    counts = end_offsets(stack.bootstrap)
    changelog = sum(len(topic_records(stack.bootstrap, t)) for t in counts if t.endswith("-changelog"))
    graph = sum(n for t, n in counts.items() if not t.endswith("-changelog") and not t.startswith("relay"))
    return {"rate": len(texts) / (times[-1] - started), "hops": graph / len(texts),
            "changelog": changelog / len(texts), "counts": counts, **meter.result}


def completed_times(stack: Stack, changelog: str) -> list[float]:
    """When each question's status became completed (the changelog record's timestamp)."""
    return [stamp for stamp, value in topic_records(stack.bootstrap, changelog) if b'"completed"' in value]


def relay_drain(stack: Stack, texts: list[str], hops: int, token: str) -> dict:
    settings = Settings()
    prefix = f"relay-{token}"
    create_topics(stack.bootstrap, {f"{prefix}-{i}": settings.partitions_pending for i in range(hops)})
    records = []
    for text in texts:
        qid = question_id(text)
        job = Job(question_id=qid, question_text=text, original_answer=text, accepted_at=0.0, epoch=1)
        records.append((f"{prefix}-0", qid.encode(), job.dumps()))
    produce(stack.bootstrap, records)
    (stack.workdir / "relay").mkdir(exist_ok=True)  # Faust creates its datadir but not the parents
    env = stack.env()
    env.update({"RELAY_HOPS": str(hops), "RELAY_PREFIX": prefix, "QASTREAM_WEB_PORT": str(free_port()),
                "QASTREAM_DATA_DIR": str(stack.workdir / "relay")})
    relay = stack.spawn("relay", [PYTHON, str(Path(__file__).with_name("relay_app.py")), "worker", "-l", "warn"],
                        env=env)
    last = f"{prefix}-{hops - 1}"
    with CpuMeter(relay=relay.pid) as meter:  # includes the relay's start-up
        wait_until(lambda: end_offsets(stack.bootstrap).get(last, 0) >= len(texts) or relay.poll() is not None,
                   len(texts) + 180, "the relay", interval=0.5)
    if relay.poll() is not None:
        raise RuntimeError(f"the relay exited: see {stack.logs}/relay.log")
    relay.terminate()
    started = topic_timestamps(stack.bootstrap, f"{prefix}-1")[0]
    return {"rate": len(texts) / (topic_timestamps(stack.bootstrap, last)[-1] - started), **meter.result}


def one_run(args: argparse.Namespace, index: int) -> dict:
    token = uuid.uuid4().hex[:8]
    texts = question_texts(token, args.questions)
    with Stack("overhead", keep=args.keep) as stack:
        stack.start_broker()
        stack.start_llm(latency=0, parallel=64)
        q = qastream_drain(stack, texts)
        hops = round(q["hops"])
        r = relay_drain(stack, question_texts(token + "r", args.questions), hops, token)
    result = {
        "run": index, "questions": args.questions,
        "qastream_questions_per_s": round(q["rate"], 1), "hops_per_question": round(q["hops"], 2),
        "changelog_records_per_question": round(q["changelog"], 2),
        "qastream_messages_per_s": round(q["rate"] * q["hops"], 1),
        "relay_hops": hops, "relay_questions_per_s": round(r["rate"], 1),
        "relay_messages_per_s": round(r["rate"] * hops, 1),
        "worker_cpu_pct": q.get("worker_cpu_pct"), "llm_server_cpu_pct": q.get("llm_cpu_pct"),
        "machine_busy_pct": q.get("machine_busy_pct"), "relay_cpu_pct": r.get("relay_cpu_pct"),
    }
    result["ratio"] = round(result["qastream_messages_per_s"] / result["relay_messages_per_s"], 3)
    # Every record written counts as a message here: qastream's table changelog records as well as its hops.
    result["qastream_records_per_s"] = round(q["rate"] * (q["hops"] + q["changelog"]), 1)
    result["records_ratio"] = round(result["qastream_records_per_s"] / result["relay_messages_per_s"], 3)
    return result


def profile_pass(args: argparse.Namespace) -> None:
    token = uuid.uuid4().hex[:8]
    out = Path(args.profile_file)
    with Stack("overhead-profile", keep=args.keep) as stack:
        stack.start_broker()
        stack.start_llm(latency=0, parallel=64)
        qastream_drain(stack, question_texts(token, args.questions), profile=out)
    print(f"profile pass (py-spy, 100 Hz, collapsed stacks in {out}):")
    print_profile(top_entries(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--questions", type=int, default=10000)
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled pass")
    parser.add_argument("--profile-file", default="var/bench-overhead-profile.txt")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    def conclude(runs: list[dict]) -> str:
        if not args.no_profile:
            Path(args.profile_file).parent.mkdir(parents=True, exist_ok=True)
            profile_pass(args)
        return f"qastream messages/s / bare Faust relay messages/s = {median_of(runs, 'ratio'):.3f} (target >= 0.5)"

    run_benchmark("overhead", args.runs, lambda index: one_run(args, index), [
        ("qastream_questions_per_s", "qastream, questions/s through the graph", 1),
        ("hops_per_question", "topic hops per question (consumed by a stage)", 2),
        ("changelog_records_per_question", "table changelog records per question", 2),
        ("qastream_messages_per_s", "qastream, messages/s (questions/s x hops)", 1),
        ("relay_questions_per_s", "bare Faust relay, records through the chain/s", 1),
        ("relay_messages_per_s", "bare Faust relay, messages/s", 1),
        ("worker_cpu_pct", "qastream worker CPU while draining, % of a core", 0),
        ("llm_server_cpu_pct", "echo LLM server CPU meanwhile, % of a core", 0),
        ("relay_cpu_pct", "relay CPU while draining, % of a core", 0),
        ("ratio", "qastream / relay (target >= 0.5)", 3),
        ("qastream_records_per_s", "qastream, every record written (hops + changelog)/s", 1),
        ("records_ratio", "same, counting every record written", 3),
    ], conclude)


if __name__ == "__main__":
    main()
