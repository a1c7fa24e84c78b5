"""The real run of docs/quality.md: FOLDOC/Jargon questions through the embedded stack with SmolLM2.

Starts ``qastream dev`` (Tansu, the SmolLM2 LLM server, one worker with
SQLite and the in-process cache) on free ports in a fresh data directory,
with the scorer threshold under test; pushes a seeded random sample of
FOLDOC and Jargon File questions with ``qastream load --via http --wait``;
prints ``qastream report`` and saves its JSON; stops the stack.

    .venv/bin/python bench/quality_run.py [--questions 200] [--threshold 0.33] [--seed 2024]

About 6 minutes on 2 cores for 200 questions (SmolLM2 answers about one
question a second, more when answers are regenerated).

The escalation comparison of docs/quality.md section 3 serves both models
from the one embedded server and runs twice, the second time with
regenerations written by Gemma 3 270M (``QASTREAM_ESCALATION_MODEL``):

    .venv/bin/python bench/quality_run.py --llm-backend smollm2,gemma3 --output docs/quality-run-both.json
    .venv/bin/python bench/quality_run.py --llm-backend smollm2,gemma3 --escalation-model gemma3:270m \
        --output docs/quality-run-escalation.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qastream.devtools.embedded import free_port, http_ok  # noqa: E402

DOCS = ROOT / "docs"
# The two runs of docs/quality.md section 3, "Escalation to Gemma": both models served, escalation off and on.
ESCALATION_RUNS = {"escalation off": DOCS / "quality-run-both.json", "escalation to `gemma3:270m`":
                   DOCS / "quality-run-escalation.json"}


def headline(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures issue 16 compares with and without escalation, from one saved ``qastream report --json``.

    Rates are of the scored answers except the low-quality share, which the
    report counts of all kept answers; "final" passes are the kept answers at
    or above the threshold, whichever attempt and model wrote them.
    """
    scored, tokens = figures["scored_responses"], figures["tokens"]
    passed = scored - figures["below_threshold"]
    return {
        "answers": figures["total_responses"],
        "first_attempt_pass_rate": figures["passed_first_attempt"] / scored if scored else None,
        "final_pass_rate": passed / scored if scored else None,
        "passed": passed,
        "low_quality_share": figures["low_quality"] / figures["total_responses"] if figures["total_responses"] else None,
        "tokens_per_kept_answer": tokens["tokens_per_kept_answer"],
        "tokens": tokens["prompt_tokens"] + tokens["eval_tokens"],
        "wasted_tokens": tokens["wasted_tokens"],
        "escalated": tokens["escalation"]["escalated"],
        "escalation_gain": tokens["escalation"]["passed_after_escalation"],
    }


def escalation_table() -> list[str]:
    """The side-by-side table of docs/quality.md section 3, from the two saved runs."""
    runs = {name: json.loads(path.read_text()) for name, path in ESCALATION_RUNS.items()}
    heads = {name: headline(figures) for name, figures in runs.items()}

    def row(label: str, cell: Callable[[dict[str, Any], dict[str, Any]], str]) -> str:
        return f"| {label} | " + " | ".join(cell(heads[name], runs[name]) for name in runs) + " |"

    def pct(part: int, whole: int) -> str:
        return f"{part / whole:.1%} ({part})" if whole else "-"

    def model_cells(f: dict[str, Any]) -> str:
        return "; ".join(f"`{m['model']}` {m['answers']} ({m['pass_rate']:.1%} pass)"
                         for m in f["tokens"]["by_model"])

    return [
        "| | " + " | ".join(runs) + " |",
        "|---|" + "---|" * len(runs),
        row("answers kept (questions completed)", lambda h, f: f"{h['answers']}"),
        row("**first-attempt pass rate**", lambda h, f: f"**{pct(f['passed_first_attempt'], f['scored_responses'])}**"),
        row("**final pass rate**", lambda h, f: f"**{pct(h['passed'], f['scored_responses'])}**"),
        row("**low-quality share** (kept after the last attempt)",
            lambda h, f: f"**{pct(f['low_quality'], f['total_responses'])}**"),
        row("attempts 1 / 2 / 3", lambda h, f: " / ".join(str(n) for n in f["attempts_distribution"].values())),
        row("regenerated questions; passed after regenerating",
            lambda h, f: f"{f['regeneration']['regenerated']}; {f['regeneration']['passed_after_regeneration']}"),
        row("**escalation gain** (passed only with the escalation model's answer)",
            lambda h, f: f"**{h['escalation_gain']}** (of {h['escalated']} kept answers by another model)"),
        row("kept answers by model (their pass rate)", lambda h, f: model_cells(f)),
        row("average score; average attempts", lambda h, f: f"{f['average_score']:.4f}; {f['average_attempts']:.2f}"),
        row("tokens, all attempts (prompt + generated)", lambda h, f: f"{h['tokens']}"),
        row("**tokens per kept answer**", lambda h, f: f"**{h['tokens_per_kept_answer']:.1f}**"),
        row("**wasted tokens** (rejected attempts; share of all)",
            lambda h, f: f"**{h['wasted_tokens']}** ({f['tokens']['wasted_share']:.1%})"),
        row("first send to last answer (s); load average at start / end",
            lambda h, f: f"{f['run']['wall_seconds']}; {f['run']['load_average_1min']['start']:.1f} / "
                         f"{f['run']['load_average_1min']['end']:.1f}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--threshold", type=float, default=0.33, help="QASTREAM_SCORER_THRESHOLD of the run")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the sample (calibration used 7)")
    parser.add_argument("--concurrency", type=int, default=8, help="submissions in flight")
    parser.add_argument("--llm-backend", default="smollm2",
                        help="comma-separated backends of the embedded server (qastream dev --llm-backend): "
                             "the first writes attempt 1, e.g. smollm2,gemma3")
    parser.add_argument("--escalation-model", default="",
                        help="QASTREAM_ESCALATION_MODEL of the run: the served model name that writes attempts 2 "
                             "and later (gemma3:270m); default none, the first backend writes every attempt")
    parser.add_argument("--llm-concurrency", type=int, default=None,
                        help="QASTREAM_LLM_CONCURRENCY of the run (default: the setting's default); lower it on a "
                             "loaded machine, where calls queued behind one slot outlast the client time-out")
    parser.add_argument("--output", default=str(ROOT / "docs" / "quality-run.json"), help="report JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (SQLite file, logs)")
    parser.add_argument("--table-only", action="store_true",
                        help="print docs/quality.md's escalation table from the two saved runs, run nothing")
    args = parser.parse_args()
    if args.table_only:
        print("\n".join(escalation_table()))
        return

    data_dir = Path(tempfile.mkdtemp(prefix="qastream-quality-"))
    web_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QASTREAM_")}
    env.update({
        "QASTREAM_DATA_DIR": str(data_dir),
        "QASTREAM_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
        "QASTREAM_OLLAMA_URL": f"http://127.0.0.1:{free_port()}",
        "QASTREAM_WEB_PORT": str(web_port),
        "QASTREAM_SCORER_THRESHOLD": str(args.threshold),
        "QASTREAM_ESCALATION_MODEL": args.escalation_model,
    })
    if args.llm_concurrency is not None:
        env["QASTREAM_LLM_CONCURRENCY"] = str(args.llm_concurrency)
    qastream = [sys.executable, "-m", "qastream"]
    print(f"data dir {data_dir}; threshold {args.threshold}; {args.questions} questions (seed {args.seed}); "
          f"backends {args.llm_backend}; escalation model {args.escalation_model or 'none'}", flush=True)
    dev = subprocess.Popen([*qastream, "dev", "--llm-backend", args.llm_backend], env=env, cwd=ROOT,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not http_ok(f"http://127.0.0.1:{web_port}/health"):
            if dev.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the stack did not start; see {data_dir}/logs/")
            time.sleep(1)
        started, load_at_start = time.perf_counter(), os.getloadavg()[0]
        subprocess.run([*qastream, "load", "foldoc", "jargon", "--sample", str(args.questions), "--seed",
                        str(args.seed), "--via", "http", "--url", f"http://127.0.0.1:{web_port}",
                        "--concurrency", str(args.concurrency), "--wait"], env=env, cwd=ROOT, check=True)
        print(f"all questions ended {time.perf_counter() - started:.0f} s after the first was sent", flush=True)
        subprocess.run([*qastream, "report"], env=env, cwd=ROOT, check=True)
        figures = json.loads(subprocess.run([*qastream, "report", "--json"], env=env, cwd=ROOT, check=True,
                                            capture_output=True, text=True).stdout)
        figures["run"] = {"questions": args.questions, "seed": args.seed, "threshold": args.threshold,
                          "llm_backend": args.llm_backend, "escalation_model": args.escalation_model,
                          "llm_concurrency": args.llm_concurrency,
                          "load_average_1min": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
                          "wall_seconds": round(time.perf_counter() - started),
                          "cores": os.cpu_count()}
        Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"report saved to {args.output}")
        print("summary: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in headline(figures).items()))
    finally:
        os.killpg(dev.pid, signal.SIGINT)  # qastream dev stops the worker, the LLM server and the broker
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
