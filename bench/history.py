"""History: the read endpoints and POST /query with 1,000,000 imported answers vs an empty database,
and a worker's memory after 100,000 questions vs after 1,000.

Per database (SQLite, and PostgreSQL in two fresh schemas dropped afterwards), two stacks side by
side (each Tansu, echo LLM with no latency, one worker with the scorer off), one on an empty database
and one on a database into which the real ``qastream migrate FILE --no-cache`` first imported
``--answers`` records of the shape ``bench/migrate.py`` writes (its time is printed):

1. Both workers start; after ``--pause`` s and a short warm-up of each, the load generator (open
   loop, its own process) asks ``GET /metrics``, ``GET /answers/latest`` and ``GET /status/{id}`` at
   ``--rate`` req/s, ``--seconds`` per endpoint and stack, split into ``--rounds`` rounds that
   alternate between the stacks (empty first, then imported first, ...); each figure is the median
   over the rounds.  Measured in the same minutes, the two databases share whatever else the machine
   does, which a sequential run (empty first, import, then imported) charged to the imported one.
   The status ids are those of imported records, so the empty database answers them 404 after the
   same table and database look-ups that find them on the other.
2. Each stack then gets unique questions on ``POST /query`` at ``--query-rate``, one stack after the
   other, each drained before the next.

Printed per database: p50/p99 of each endpoint on both, POST /query's accepted fraction and p99, and
imported / empty ratios.  Targets: ``/metrics`` p99 <= 50 ms imported and <= 2x empty,
``/answers/latest`` p99 <= 10 ms.

Memory (SQLite, its own stack): 1,000 questions are produced to questions-pending with
``qastream load --via kafka`` and drained by a worker with ``QASTREAM_STATUS_RETENTION_SECONDS``
at ``--retention`` (30 s: finished questions leave the status and attempts tables after it, which
is what bounds memory); its VmRSS is read when they are stored and again once the retention has
passed; then ``--questions`` - 1,000 more are loaded while it runs, ``--in-flight`` at a time
(1,000, as many as the first reading had), each batch drained before the next (so what is in
flight stays bounded and only history grows), and the same two readings are taken.  The ratio
compares the readings after the retention (target <= 1.5x); the one at the end of the drain, with
the last ``rate x retention`` questions still in the tables, is printed too.

    .venv/bin/python bench/history.py [--answers 1000000] [--questions 100000] [--no-sqlite] [--no-postgres]
                                      [--memory-only | --no-memory]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import run_loadgen  # noqa: E402
from migrate import DEFAULT_POSTGRES, record_text, write_records  # noqa: E402
from runner import fmt, run_benchmark  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from stack import Stack, sqlite_scalar, wait_until  # noqa: E402

from qastream.policy.ids import question_id  # noqa: E402

METRICS_P99_MS, METRICS_RATIO, LATEST_P99_MS, MEMORY_RATIO = 50.0, 2.0, 10.0, 1.5
ENDPOINTS = ("metrics", "latest", "status")
STATUS_IDS = 500  # distinct /status ids, spread over the imported records


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory (``VmRSS``) or its peak (``VmHWM``), MB."""
    with open(f"/proc/{pid}/status") as f:
        kb = int(next(line for line in f if line.startswith(field + ":")).split()[1])
    return round(kb / 1024, 1)


# -- the endpoints, empty and imported -------------------------------------------------------------------------------


def get_step(stack: Stack, paths: list[str], rate: float, seconds: float) -> dict:
    return run_loadgen({"url": stack.url, "mode": "open", "rate": rate, "duration": seconds, "method": "GET",
                        "paths": paths, "request_timeout": 30})


def median(values: list[float]) -> float | None:
    present = sorted(v for v in values if v is not None)
    return present[len(present) // 2] if present else None


def measure_endpoints(stacks: dict[str, Stack], args: argparse.Namespace, status_paths: list[str],
                      token: str) -> dict[str, dict]:
    """p50/p99 of each GET endpoint on both stacks, interleaved, then POST /query's acceptance on each.

    Each endpoint is asked in ``--rounds`` rounds of ``--seconds / --rounds`` per stack, alternating
    which stack goes first, and each figure is the median over the rounds: whatever else the
    machine does during the run falls on both databases alike instead of on whichever ran later.
    """
    paths = {"metrics": ["/metrics"], "latest": ["/answers/latest"], "status": status_paths}
    time.sleep(args.pause)  # fresh workers: recovery, the first lag reading
    for stack in stacks.values():  # connections, caches, metadata
        get_step(stack, [p for ps in paths.values() for p in ps[:50]], args.rate, 2)
    steps: dict[str, dict[str, list[dict]]] = {side: {name: [] for name in paths} for side in stacks}
    order = list(stacks)
    for name, endpoint_paths in paths.items():
        for round_ in range(args.rounds):
            for side in order if round_ % 2 == 0 else order[::-1]:
                steps[side][name].append(get_step(stacks[side], endpoint_paths, args.rate,
                                                  args.seconds / args.rounds))
    result: dict[str, dict] = {}
    for side, stack in stacks.items():
        one: dict = {}
        for name, runs in steps[side].items():
            one.update({f"{name}_p50_ms": median([r["p50_ms"] for r in runs]),
                        f"{name}_p99_ms": median([r["p99_ms"] for r in runs]),
                        f"{name}_statuses": [r["statuses"] for r in runs],
                        f"{name}_errors": [r["errors"] for r in runs]})
        step = run_loadgen({"url": stack.url, "mode": "open", "rate": args.query_rate, "duration": args.seconds,
                            "bodies": {"unique": f"{token}-{side}"}, "max_connections": 512, "request_timeout": 30})
        accepted = step["statuses"].get("202", 0)
        one.update({"query_accepted_fraction": round(accepted / step["requests"], 4) if step["requests"] else None,
                    "query_accepted_per_s": round(accepted / step["seconds"], 1), "query_p50_ms": step["p50_ms"],
                    "query_p99_ms": step["p99_ms"], "query_statuses": step["statuses"]})
        result[side] = one
        # The next stack's POST step must not share the cores with this one's pipeline.
        wait_until(lambda s=stack: pending(s, s.database_url) == 0, 300, f"the {side} POST step answered")
    return result


def ratio(full: float | None, empty: float | None) -> float | None:
    return round(full / empty, 2) if full and empty else None


def pending(stack: Stack, database_url: str | None) -> int:
    """Questions not yet answered (neither completed nor failed) in the stack's database (SQLite file, or ``database_url``)."""
    statement = "SELECT count(*) FROM questions WHERE status NOT IN ('completed', 'failed')"
    if not database_url:
        return sqlite_scalar(stack.db_path, statement) or 0
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(statement)).scalar_one())
    finally:
        engine.dispose()


def database_run(args: argparse.Namespace, name: str, records: Path, status_paths: list[str],
                 database_urls: dict[str, str | None]) -> dict:
    """Two stacks side by side, one on an empty database and one on ``records`` imported, measured together."""
    token = uuid.uuid4().hex[:8]
    with Stack(f"history-{name}-empty", keep=args.keep) as empty, \
            Stack(f"history-{name}-full", keep=args.keep) as full:
        stacks = {"empty": empty, "full": full}
        settings: dict[str, dict] = {}
        for side, stack in stacks.items():
            stack.database_url = database_urls[side]
            settings[side] = {"scorer_enabled": False}
            if database_urls[side]:
                settings[side]["database_url"] = database_urls[side]
            stack.start_broker()
            stack.start_llm(latency=0, parallel=64)
        started = time.perf_counter()
        full.qastream("migrate", str(records), "--no-cache", timeout=7200, **settings["full"])
        import_seconds = time.perf_counter() - started
        for side, stack in stacks.items():
            stack.start_worker(**settings[side])
        measured = measure_endpoints(stacks, args, status_paths, token)
    result: dict = {"database": name, "answers": args.answers, "import_seconds": round(import_seconds, 1),
                    "import_records_per_s": round(args.answers / import_seconds)}
    for key, value in measured["empty"].items():
        result[f"empty_{key}"] = value
        result[f"full_{key}"] = measured["full"][key]
    for key in [f"{e}_{p}" for e in ENDPOINTS + ("query",) for p in ("p50_ms", "p99_ms")]:
        result[f"ratio_{key}"] = ratio(measured["full"][key], measured["empty"][key])
    result["ratio_query_accepted_fraction"] = ratio(measured["full"]["query_accepted_fraction"],
                                                    measured["empty"]["query_accepted_fraction"])
    return result


# -- memory -----------------------------------------------------------------------------------------------------------


def load_questions(stack: Stack, texts: list[str], name: str, rate: float = 0.0) -> None:
    """Produce ``texts`` to questions-pending as ``POST /query`` would, at ``rate``/s (0: as fast as it can)."""
    data = stack.workdir / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"question_text": t, "original_answer": t}) + "\n" for t in texts))
    stack.qastream("load", str(data), "--via", "kafka", "--concurrency", "64", "--rate", str(rate), timeout=7200,
                   scorer_enabled=False)


def stored(stack: Stack) -> int:
    return sqlite_scalar(stack.db_path, "SELECT count(*) FROM responses") or 0


def memory_run(args: argparse.Namespace) -> dict:
    token = uuid.uuid4().hex[:8]
    texts = [f"History {token} question {i}: what does subsystem {i % 997} of the pipeline do?"
             for i in range(args.questions)]
    first = min(1000, args.questions)
    settle = args.retention * 1.25 + 10  # the expiry scan runs every retention / 4
    with Stack("history-memory", keep=args.keep) as stack:
        stack.start_broker()
        stack.start_llm(latency=0, parallel=64)
        load_questions(stack, texts[:first], "first")
        worker = stack.start_worker(scorer_enabled=False, status_retention_seconds=args.retention)
        wait_until(lambda: stored(stack) >= first, first + 120, f"{first} stored answers")
        small_done = rss_mb(worker.pid)
        time.sleep(settle)
        small = rss_mb(worker.pid)
        started = time.perf_counter()
        # At most --in-flight questions outstanding: memory held by a backlog is memory of what is in
        # flight, which the target does not bound; this run asks whether history costs memory.
        for start in range(first, args.questions, args.in_flight):
            chunk = texts[start:start + args.in_flight]
            target = start + len(chunk)
            load_questions(stack, chunk, f"chunk-{start}")
            wait_until(lambda n=target: stored(stack) >= n, len(chunk) + 300, f"{target} stored answers",
                       interval=0.5)
            print(f"  memory run: {target:,}/{args.questions:,} questions stored, worker RSS "
                  f"{rss_mb(worker.pid):.1f} MB, {time.perf_counter() - started:.0f} s", flush=True)
        drain = time.perf_counter() - started
        large_done, peak = rss_mb(worker.pid), rss_mb(worker.pid, "VmHWM")
        time.sleep(settle)
        large = rss_mb(worker.pid)
    rate = (args.questions - first) / drain
    return {
        "questions": args.questions, "retention_s": args.retention, "through_per_s": round(rate, 1),
        "rss_mb_after_1000_done": small_done, "rss_mb_after_1000": small,
        "rss_mb_after_all_done": large_done, "rss_mb_after_all": large, "rss_mb_peak": peak,
        "memory_ratio": round(large / small, 3), "memory_ratio_at_drain_end": round(large_done / small, 3),
    }


# -- the run ------------------------------------------------------------------------------------------------------------


def one_run(args: argparse.Namespace, index: int) -> dict:
    if args.no_memory or args.memory_only:
        databases = {} if args.memory_only else import_runs(args, index)
        memory = {} if args.no_memory else memory_run(args)
    else:
        databases, memory = import_runs(args, index), memory_run(args)
    if memory:
        print(json.dumps({"run": index, "step": "memory", **memory}), flush=True)
    result = {f"{db}_{k}": v for db, one in databases.items() for k, v in one.items()
              if not k.endswith(("_statuses", "_errors")) and k not in ("database", "answers")}
    return {**result, **memory}


def import_runs(args: argparse.Namespace, index: int) -> dict:
    """Each database's run, by name; each printed as it finishes."""
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="qastream-bench-history-") as tmp:
        records = Path(tmp) / "history.jsonl"
        token = write_records(records, args.answers)
        step = max(args.answers // STATUS_IDS, 1)
        status_paths = [f"/status/{question_id(record_text(token, i))}" for i in range(0, args.answers, step)]
        targets: list[tuple[str, dict[str, str | None]]] = [("sqlite", {"empty": None, "full": None})] \
            if args.sqlite else []
        schemas: list[str] = []
        if args.postgres:
            admin = create_engine(args.postgres_url)
            urls: dict[str, str | None] = {}
            for side in ("empty", "full"):
                schema = f"bench_{side}_{uuid.uuid4().hex[:8]}"
                with admin.begin() as connection:
                    connection.execute(text(f'CREATE SCHEMA "{schema}"'))
                schemas.append(schema)
                urls[side] = f"{args.postgres_url}?options=-csearch_path%3D{schema}"
            targets.append(("postgres", urls))
        try:
            for name, urls_ in targets:
                one = database_run(args, name, records, status_paths, urls_)
                print(json.dumps({"run": index, "step": name, **one}), flush=True)
                result[name] = one
        finally:
            if schemas:
                with admin.begin() as connection:
                    for schema in schemas:
                        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    return result


def fields(databases: list[str]) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    for db in databases:
        out.append((f"{db}_import_records_per_s", f"{db}: migrate, records/s", 0))
        for endpoint, label in (("metrics", "GET /metrics"), ("latest", "GET /answers/latest"),
                                ("status", "GET /status/{id}"), ("query", "POST /query")):
            for which in ("empty", "full"):
                for point in ("p50", "p99"):
                    out.append((f"{db}_{which}_{endpoint}_{point}_ms", f"{db}: {label} {which} {point} ms", 2))
            out.append((f"{db}_ratio_{endpoint}_p99_ms", f"{db}: {label} p99 imported / empty", 2))
        out += [(f"{db}_empty_query_accepted_fraction", f"{db}: POST /query accepted, empty", 3),
                (f"{db}_full_query_accepted_fraction", f"{db}: POST /query accepted, imported", 3)]
    return out + [("through_per_s", "memory run: questions/s through (loading included)", 0),
                  ("rss_mb_after_1000", "worker RSS MB after 1,000 (+ retention)", 1),
                  ("rss_mb_after_all_done", "worker RSS MB at the end of the drain", 1),
                  ("rss_mb_after_all", "worker RSS MB after all (+ retention)", 1),
                  ("memory_ratio_at_drain_end", "RSS drain end / after 1,000", 3),
                  ("memory_ratio", "RSS after all / after 1,000 (target <= 1.5)", 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=1_000_000, help="historical answers imported")
    parser.add_argument("--questions", type=int, default=100_000, help="questions through the pipeline for memory")
    parser.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--rate", type=float, default=100.0, help="GET requests/s per endpoint")
    parser.add_argument("--query-rate", type=float, default=200.0, help="POST /query requests/s")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each step, per stack")
    parser.add_argument("--rounds", type=int, default=4, help="rounds each GET step is split into, alternating stacks")
    parser.add_argument("--pause", type=float, default=5.0, help="idle seconds after a worker starts")
    parser.add_argument("--retention", type=float, default=30.0, help="QASTREAM_STATUS_RETENTION_SECONDS, memory run")
    parser.add_argument("--in-flight", type=int, default=1000,
                        help="memory run: questions submitted at once, each batch drained before the next")
    parser.add_argument("--memory-only", action="store_true", help="only the memory run")
    parser.add_argument("--no-memory", action="store_true", help="only the import runs")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    databases = [] if args.memory_only else (["sqlite"] if args.sqlite else []) + (["postgres"] if args.postgres else [])

    def conclude(runs: list[dict]) -> str:
        last = runs[-1]
        for db in databases:
            p99, ratio_ = last[f"{db}_full_metrics_p99_ms"], last[f"{db}_ratio_metrics_p99_ms"]
            latest = last[f"{db}_full_latest_p99_ms"]
            print(f"  {db}: /metrics p99 {fmt(p99, 2)} ms at {args.answers:,} answers "
                  f"({'meets' if p99 <= METRICS_P99_MS else 'misses'} <= {METRICS_P99_MS:g} ms), "
                  f"{fmt(ratio_, 2)}x empty ({'meets' if ratio_ and ratio_ <= METRICS_RATIO else 'misses'} "
                  f"<= {METRICS_RATIO:g}x); /answers/latest p99 {fmt(latest, 2)} ms "
                  f"({'meets' if latest <= LATEST_P99_MS else 'misses'} <= {LATEST_P99_MS:g} ms)")
        memory = last.get("memory_ratio")
        if memory is not None:
            print(f"  memory: {fmt(last['rss_mb_after_all'])} MB after {args.questions:,} vs "
                  f"{fmt(last['rss_mb_after_1000'])} MB after 1,000, retention {args.retention:g} s "
                  f"({'meets' if memory <= MEMORY_RATIO else 'misses'} <= {MEMORY_RATIO:g}x)")
        ratios = ", ".join(f"{db} /metrics {fmt(last[f'{db}_ratio_metrics_p99_ms'], 2)}x "
                           f"/answers/latest {fmt(last[f'{db}_ratio_latest_p99_ms'], 2)}x "
                           f"/status {fmt(last[f'{db}_ratio_status_p99_ms'], 2)}x "
                           f"POST accepted {fmt(last[f'{db}_ratio_query_accepted_fraction'], 3)}x"
                           for db in databases)
        return f"p99 imported / empty: {ratios or '-'}; RSS after {args.questions:,} / after 1,000 = {fmt(memory, 3)}"

    run_benchmark("history", args.runs, lambda index: one_run(args, index), fields(databases), conclude)


if __name__ == "__main__":
    main()
