"""Overload: POST /query offered ~2x what one worker accepts, with and without admission control.

One worker (SQLite, in-process cache, scorer off, no generate stage: ``bench/acceptance_worker.py``)
behind Tansu.  First an unloaded step (``--unloaded`` req/s) gives the baseline p99; then
``--rate`` req/s (open loop, unique questions, latency from the scheduled send time) for
``--seconds``, once with ``QASTREAM_MAX_REQUESTS_IN_FLIGHT=--limit`` and, unless
``--no-unbounded``, once with a limit too high to matter (the behaviour before issue 11).

Printed per run: achieved 202/s, admitted (202) p50/p99, the 503 count and their p50/p99, and the
ratio admitted p99 / unloaded p99.  Admission works when the admitted p99 stays bounded by about
limit / capacity while the unbounded p99 grows with the length of the step.

    .venv/bin/python bench/overload.py [--rate 2000] [--seconds 8] [--limit 64] [--runs 1]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import run_loadgen  # noqa: E402
from measure import CpuMeter  # noqa: E402
from runner import run_benchmark  # noqa: E402
from stack import Stack  # noqa: E402

UNBOUNDED = 1_000_000


def step(stack: Stack, rate: float, seconds: float, token: str) -> dict:
    result = run_loadgen({"url": stack.url, "mode": "open", "rate": rate, "duration": seconds,
                          "bodies": {"unique": token}, "max_connections": 1024, "request_timeout": 60})
    by_status = result["latency_ms_by_status"]
    accepted, refused = by_status.get("202", {}), by_status.get("503", {})
    return {"offered_per_s": rate, "accepted_per_s": round(result["statuses"].get("202", 0) / result["seconds"], 1),
            "accepted_p50_ms": accepted.get("p50"), "accepted_p99_ms": accepted.get("p99"),
            "refused": result["statuses"].get("503", 0), "refused_p50_ms": refused.get("p50"),
            "refused_p99_ms": refused.get("p99"), "other": {k: v for k, v in result["statuses"].items()
                                                            if k not in ("202", "503")},
            "errors": result["errors"], "unloaded_p99_ms": None}


def one_run(args: argparse.Namespace, limit: int, index: int) -> dict:
    token = uuid.uuid4().hex[:8]
    with Stack("overload") as stack:
        stack.start_broker()
        stack.start_worker(script=str(Path(__file__).with_name("acceptance_worker.py")), scorer_enabled=False,
                           max_requests_in_flight=limit)
        run_loadgen({"url": stack.url, "mode": "open", "rate": 200, "duration": 2,
                     "bodies": {"unique": f"{token}-warm"}})
        unloaded = step(stack, args.unloaded, args.seconds, f"{token}-unloaded")
        # The load generator shares the machine: its CPU grows with the answers it reads (503s included).
        with CpuMeter(worker=stack.worker.pid, broker=stack.process("tansu").pid) as meter:
            loaded = step(stack, args.rate, args.seconds, f"{token}-loaded")
    result = {"limit": limit, **loaded, **meter.result, "unloaded_p99_ms": unloaded["accepted_p99_ms"]}
    result["accepted_p99_over_unloaded"] = (round(loaded["accepted_p99_ms"] / unloaded["accepted_p99_ms"], 1)
                                            if loaded["accepted_p99_ms"] and unloaded["accepted_p99_ms"] else None)
    return result


FIELDS = [("unloaded_p99_ms", "unloaded p99 ms", 2), ("accepted_per_s", "overloaded: accepted (202) /s", 1),
          ("accepted_p50_ms", "overloaded: 202 p50 ms", 2), ("accepted_p99_ms", "overloaded: 202 p99 ms", 2),
          ("accepted_p99_over_unloaded", "202 p99 / unloaded p99", 1), ("refused", "503 answers", 0),
          ("refused_p50_ms", "503 p50 ms", 2), ("refused_p99_ms", "503 p99 ms", 2),
          ("worker_cpu_pct", "overloaded: worker CPU, % of one core", 0),
          ("machine_busy_pct", "overloaded: machine busy, % of one core", 0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="offered req/s (~2x one worker's acceptance)")
    parser.add_argument("--unloaded", type=float, default=100.0, help="req/s of the baseline step")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--limit", type=int, default=64, help="QASTREAM_MAX_REQUESTS_IN_FLIGHT of the bounded run")
    parser.add_argument("--no-unbounded", action="store_true", help="skip the run without admission control")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    limits = [args.limit] + ([] if args.no_unbounded else [UNBOUNDED])
    for limit in limits:
        run_benchmark(f"overload-limit-{limit}", args.runs, lambda index, limit=limit: one_run(args, limit, index), FIELDS,
                      conclude, title=f"overload at {args.rate:g} req/s, limit {limit}")


def conclude(runs: list[dict]) -> str:
    """The ratio line: admitted p99 under overload over the unloaded p99."""
    ratios = sorted(r["accepted_p99_over_unloaded"] for r in runs if r.get("accepted_p99_over_unloaded"))
    return f"202 p99 overloaded / unloaded (median of runs): {ratios[len(ratios) // 2] if ratios else '-'}"

if __name__ == "__main__":
    main()
