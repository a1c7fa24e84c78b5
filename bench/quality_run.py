"""The real run of docs/quality.md: FOLDOC/Jargon questions through the embedded stack with SmolLM2.

Starts ``qastream dev`` (Tansu, the SmolLM2 LLM server, one worker with
SQLite and the in-process cache) on free ports in a fresh data directory,
with the scorer threshold under test; pushes a seeded random sample of
FOLDOC and Jargon File questions with ``qastream load --via http --wait``;
prints ``qastream report`` and saves its JSON; stops the stack.

    .venv/bin/python bench/quality_run.py [--questions 200] [--threshold 0.33] [--seed 2024]

About 20 minutes on 2 cores for 200 questions (SmolLM2 answers about one
question a second, more when answers are regenerated).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qastream.devtools.embedded import free_port, http_ok  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--threshold", type=float, default=0.33, help="QASTREAM_SCORER_THRESHOLD of the run")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the sample (calibration used 7)")
    parser.add_argument("--concurrency", type=int, default=8, help="submissions in flight")
    parser.add_argument("--llm-backend", default="smollm2", choices=["smollm2", "echo"])
    parser.add_argument("--output", default=str(ROOT / "docs" / "quality-run.json"), help="report JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (SQLite file, logs)")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="qastream-quality-"))
    web_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QASTREAM_")}
    env.update({
        "QASTREAM_DATA_DIR": str(data_dir),
        "QASTREAM_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
        "QASTREAM_OLLAMA_URL": f"http://127.0.0.1:{free_port()}",
        "QASTREAM_WEB_PORT": str(web_port),
        "QASTREAM_SCORER_THRESHOLD": str(args.threshold),
    })
    qastream = [sys.executable, "-m", "qastream"]
    print(f"data dir {data_dir}; threshold {args.threshold}; {args.questions} questions (seed {args.seed})", flush=True)
    dev = subprocess.Popen([*qastream, "dev", "--llm-backend", args.llm_backend], env=env, cwd=ROOT,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not http_ok(f"http://127.0.0.1:{web_port}/health"):
            if dev.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the stack did not start; see {data_dir}/logs/")
            time.sleep(1)
        started = time.perf_counter()
        subprocess.run([*qastream, "load", "foldoc", "jargon", "--sample", str(args.questions), "--seed",
                        str(args.seed), "--via", "http", "--url", f"http://127.0.0.1:{web_port}",
                        "--concurrency", str(args.concurrency), "--wait"], env=env, cwd=ROOT, check=True)
        print(f"all questions ended {time.perf_counter() - started:.0f} s after the first was sent", flush=True)
        subprocess.run([*qastream, "report"], env=env, cwd=ROOT, check=True)
        figures = json.loads(subprocess.run([*qastream, "report", "--json"], env=env, cwd=ROOT, check=True,
                                            capture_output=True, text=True).stdout)
        figures["run"] = {"questions": args.questions, "seed": args.seed, "threshold": args.threshold,
                          "llm_backend": args.llm_backend, "wall_seconds": round(time.perf_counter() - started),
                          "cores": os.cpu_count()}
        Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"report saved to {args.output}")
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
