"""Acceptance: POST /query at fixed offered loads and at saturation, against the broker's own ceiling.

One worker (SQLite, in-process cache, scorer off) behind Tansu, run without
its generate stage (``bench/acceptance_worker.py`` says why), so nothing
downstream of acceptance loads the machine while it is measured.  What
acceptance itself causes still runs: each accepted question is written to
the database, produced to questions-pending with its ``queued`` status
event, and the ``track`` agent folds that event into the status and attempts
tables (two changelog records).

* Open loop (``bench/loadgen.py``'s generator, a separate process): unique
  questions at each ``--loads`` rate for ``--seconds``; latency counts from
  the scheduled send time, so queueing is not hidden.
* Saturation: closed loop with ``wrk`` (Debian), ``--connections`` in flight
  (the Python generator in closed-loop mode when wrk is missing), right after
  the first load step, while the broker is still small.
* Records per accepted question: the end offsets of every topic after the
  loads divided by the questions accepted.
* Broker ceiling: with the worker stopped, a raw aiokafka producer with the
  worker's development-profile producer settings (``max_batch_size=16``: one
  record per batch) writes, per question, one record of the real size to
  each topic the acceptance writes, with the same partition counts, from 64
  coroutines; ceiling in questions/s = records/s / records per question.

The last line is saturated acceptance / ceiling (target >= 0.7).

    .venv/bin/python bench/acceptance.py [--runs 3] [--loads 500,1000,2000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_io import create_topics, end_offsets, produce  # noqa: E402
from loadgen import run_loadgen, run_wrk, wrk_available  # noqa: E402
from measure import CpuMeter  # noqa: E402
from profiling import print_profile, profiling, top_entries  # noqa: E402
from runner import median_of, run_benchmark  # noqa: E402
from stack import Stack, sqlite_scalar, wait_until  # noqa: E402

from qastream.models import Job, event_for  # noqa: E402
from qastream.policy.ids import question_id  # noqa: E402
from qastream.policy.lifecycle import fold_attempts, fold_status  # noqa: E402
from qastream.settings import Settings  # noqa: E402

P99_TARGET_MS = 20.0


def acceptance_records(i: int, token: str) -> list[tuple[str, bytes]]:
    """The records one accepted question makes, with their real sizes: (kind, value)."""
    text = f"Load {token} question {i}: what does subsystem {i % 997} of the pipeline do?"
    qid = question_id(text)
    job = Job(question_id=qid, question_text=text, original_answer=text, accepted_at=time.time(), epoch=1)
    event = event_for(job, "queued").asdict()
    return [("pending", job.dumps()), ("events", json.dumps(event).encode()),
            ("status", json.dumps(fold_status(None, event)).encode()),
            ("attempts", json.dumps(fold_attempts(None, event)).encode())]


def producer_ceiling(bootstrap: str, kinds: list[str], questions: int, token: str) -> dict:
    """Raw producer rate writing one record of each ``kinds`` per question, partitioned as the worker's topics."""
    partitions = Settings().partitions_events  # pending, events and both changelogs have this many
    topics = {kind: f"ceiling-{token}-{kind}" for kind in kinds}
    create_topics(bootstrap, {name: partitions for name in topics.values()})

    def records():
        for i in range(questions):
            qid = f"{i:016x}".encode()
            for kind, value in acceptance_records(i, token):
                if kind in topics:
                    yield topics[kind], qid, value

    count, seconds = produce(bootstrap, records(), concurrency=64)
    return {"records_per_s": count / seconds, "questions_per_s": questions / seconds}


def offered_load(stack: Stack, rate: float, seconds: float, token: str) -> dict:
    return run_loadgen({"url": stack.url, "mode": "open", "rate": rate, "duration": seconds,
                        "bodies": {"unique": f"{token}-{int(rate)}"}, "max_connections": 512,
                        "request_timeout": 30})


def saturation(stack: Stack, args: argparse.Namespace, token: str) -> dict:
    if wrk_available():
        return run_wrk(stack.url, connections=args.connections, seconds=int(args.seconds), token=f"{token}-sat")
    return run_loadgen({"url": stack.url, "mode": "closed", "concurrency": args.connections,
                        "duration": args.seconds, "bodies": {"unique": f"{token}-sat"}})


def measure_saturation(stack: Stack, args: argparse.Namespace, token: str, index: int) -> dict:
    """Saturation with the CPU each process used (and a profile in the first run when asked)."""
    meter = CpuMeter(worker=stack.worker.pid, broker=stack.process("tansu").pid)
    if args.profile and index == 1:
        out = Path(args.profile)
        with profiling(stack.worker.pid, out), meter:
            sat = saturation(stack, args, token)
        print_profile(top_entries(out))
    else:
        with meter:
            sat = saturation(stack, args, token)
    return {**sat, **meter.result}


def settle(stack: Stack) -> dict[str, int]:
    """Wait until the topics stop growing (track has folded every event); returns their record counts."""
    last: dict[str, int] = {}

    def stable() -> bool:
        nonlocal last
        now = end_offsets(stack.bootstrap)
        same = now == last
        last = now
        return same

    wait_until(stable, 120, "the topics to settle", interval=1.0)
    return last


def one_run(args: argparse.Namespace, index: int) -> dict:
    token = uuid.uuid4().hex[:8]
    loads = [float(x) for x in args.loads.split(",") if x.strip()]
    result: dict = {"run": index}
    with Stack("acceptance", keep=args.keep) as stack:
        stack.start_broker()
        stack.start_worker(script=str(Path(__file__).with_name("acceptance_worker.py")), scorer_enabled=False)
        run_loadgen({"url": stack.url, "mode": "open", "rate": 200, "duration": 2,
                     "bodies": {"unique": f"{token}-warm"}})  # connections, code paths, first group commits
        steps = []
        for number, rate in enumerate(loads):
            settle(stack)  # the previous step's events folded: each step starts from an idle worker
            time.sleep(args.pause)
            step = offered_load(stack, rate, args.seconds, token)
            steps.append(step)
            print(json.dumps({"run": index, "step": "open", **step}), flush=True)
            if number == 0:
                # Saturation early: Tansu's memory engine costs more CPU per fetch as its topics grow
                # (17 % of a core at saturation on a fresh broker, 74 % after ~25,000 questions).
                settle(stack)
                time.sleep(args.pause)
                sat = measure_saturation(stack, args, token, index)
                print(json.dumps({"run": index, "step": "saturation", **sat}), flush=True)
        counts = settle(stack)
        accepted = sqlite_scalar(stack.db_path, "SELECT count(*) FROM questions")
        stack.stop_worker()
        qastream_records = sum(n for topic, n in counts.items() if not topic.startswith("ceiling-"))
        per_question = qastream_records / accepted
        full = producer_ceiling(stack.bootstrap, ["pending", "events", "status", "attempts"], args.ceiling_questions,
                                token)
        request_path = producer_ceiling(stack.bootstrap, ["pending", "events"], args.ceiling_questions, token + "r")
    for rate, step in zip(loads, steps):
        key = f"{int(rate)}"
        result[f"achieved_{key}"] = step["achieved_per_s"]
        result[f"p50_ms_{key}"] = step["p50_ms"]
        result[f"p99_ms_{key}"] = step["p99_ms"]
        result[f"failed_{key}"] = step["requests"] - step["ok"]
    result.update({
        "saturated_per_s": sat["achieved_per_s"], "saturated_p50_ms": sat["p50_ms"], "saturated_p99_ms": sat["p99_ms"],
        "saturated_failed": sat["requests"] - sat["ok"],
        "saturated_worker_cpu_pct": sat.get("worker_cpu_pct"), "saturated_broker_cpu_pct": sat.get("broker_cpu_pct"),
        "saturated_machine_busy_pct": sat.get("machine_busy_pct"),
        "accepted_questions": accepted, "records_per_question": round(per_question, 2),
        "records_by_topic": counts,
        "ceiling_records_per_s": round(full["records_per_s"], 1),
        "ceiling_questions_per_s": round(full["questions_per_s"], 1),
        "ceiling_request_path_questions_per_s": round(request_path["questions_per_s"], 1),
    })
    result["acceptance_over_ceiling"] = round(sat["achieved_per_s"] / full["questions_per_s"], 3)
    result["broker_allows_2000"] = full["questions_per_s"] >= 2000
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--loads", default="500,1000,2000", help="offered loads, requests/s, comma separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each load step")
    parser.add_argument("--pause", type=float, default=1.0,
                        help="idle seconds before each step, after the previous one's events are folded")
    parser.add_argument("--connections", type=int, default=32, help="requests in flight at saturation")
    parser.add_argument("--ceiling-questions", type=int, default=5000, help="questions the raw producer writes")
    parser.add_argument("--profile", metavar="FILE", help="profile the worker at saturation in the first run "
                                                          "(py-spy collapsed stacks to FILE) and print the top 10")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    loads = [f"{int(float(x))}" for x in args.loads.split(",") if x.strip()]
    fields = []
    for key in loads:
        fields += [(f"achieved_{key}", f"offered {key}/s: achieved req/s", 1),
                   (f"p50_ms_{key}", f"offered {key}/s: p50 ms", 2),
                   (f"p99_ms_{key}", f"offered {key}/s: p99 ms", 2)]
    fields += [("saturated_per_s", f"saturation ({args.connections} in flight): req/s", 1),
               ("saturated_p50_ms", "saturation: p50 ms", 2), ("saturated_p99_ms", "saturation: p99 ms", 2),
               ("saturated_worker_cpu_pct", "saturation: worker CPU, % of one core", 0),
               ("saturated_broker_cpu_pct", "saturation: Tansu CPU, % of one core", 0),
               ("saturated_machine_busy_pct", "saturation: machine busy, % of one core", 0),
               ("records_per_question", "records produced per accepted question", 2),
               ("ceiling_records_per_s", "raw producer ceiling, records/s", 1),
               ("ceiling_questions_per_s", "ceiling, accepted questions/s", 1),
               ("ceiling_request_path_questions_per_s", "ceiling, request-path records only, q/s", 1),
               ("acceptance_over_ceiling", "saturated acceptance / ceiling (target >= 0.7)", 3)]

    def conclude(runs: list[dict]) -> str:
        ceiling = median_of(runs, "ceiling_questions_per_s")
        for key in [key for key in loads if float(key) <= ceiling]:
            worst = max(r[f"p99_ms_{key}"] for r in runs)
            print(f"  offered {key}/s is within the broker ceiling: worst p99 {worst:.1f} ms "
                  f"({'meets' if worst <= P99_TARGET_MS else 'misses'} p99 <= {P99_TARGET_MS:g} ms)")
        print(f"  the broker {'allows' if ceiling >= 2000 else 'does not allow'} 2,000 accepted questions/s "
              f"(ceiling {ceiling:,.0f}/s with one record per batch)")
        return f"acceptance / broker ceiling = {median_of(runs, 'acceptance_over_ceiling'):.3f} (target >= 0.7)"

    run_benchmark("acceptance", args.runs, lambda index: one_run(args, index), fields, conclude)


if __name__ == "__main__":
    main()
