"""Time to first answer for a new user: fresh clone, ``make install``, ``make run``, one real question.

Clones the current commit twice into temporary folders and, in each, times
``make install`` (the virtualenv, torch, the project and its dependencies,
the ``llama-cpp-python`` build), then ``make run`` until ``/health`` is ready
(broker, SmolLM2 model load, scorer model load, worker), then one question
with a reference answer until it is completed (SmolLM2 generation, BERTScore).
Both clones share one pip cache that starts empty (``PIP_CACHE_DIR`` in a
temporary folder), so the first clone is a new user's first run and the
second shows that a second clone on the same machine reuses the wheel pip
built for ``llama-cpp-python`` instead of building it again.  torch comes
from the machine's local CPU wheel either way; Debian packages (dictd data,
Chromium, kcat) are taken as already installed.

    python3 bench/first_answer.py [--clones 2] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What is a compiler?"
REFERENCE = ("A compiler is a program that translates source code written in a high-level programming "
             "language into machine code that a computer can run.")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, None


def poll(predicate, timeout: float, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            raise RuntimeError(f"make run exited with {process.returncode} while waiting for {what}")
        time.sleep(0.2)
    raise TimeoutError(f"{what} took more than {timeout:.0f} s")


def one_clone(work: Path, index: int, pip_cache: Path) -> dict[str, float]:
    clone = work / f"clone{index}"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    web_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QASTREAM_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update({"PIP_CACHE_DIR": str(pip_cache), "QASTREAM_WEB_PORT": str(web_port),
                "QASTREAM_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
                "QASTREAM_OLLAMA_URL": f"http://127.0.0.1:{free_port()}"})
    log = open(work / f"clone{index}.log", "wb")
    started = time.monotonic()
    subprocess.run(["make", "install"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    installed = time.monotonic()
    run = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    url = f"http://127.0.0.1:{web_port}"
    try:
        poll(lambda: request("GET", f"{url}/health")[0] == 200, 600, "the worker to be ready", run)
        ready = time.monotonic()
        code, body = request("POST", f"{url}/query", {"question_text": QUESTION, "original_answer": REFERENCE})
        if code != 202:
            raise RuntimeError(f"POST /query answered {code}: {body}")
        qid = body["question_id"]
        poll(lambda: (request("GET", f"{url}/status/{qid}")[1] or {}).get("status") == "completed", 600,
             "the first answer", run)
        answered = time.monotonic()
        result = request("GET", f"{url}/status/{qid}")[1]["result"]
    finally:
        os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=120)
    print(f"clone {index}: answer {result['answer'][:70]!r}... score {result['score']:.3f}, "
          f"attempts {result.get('processing_attempts')}", flush=True)
    return {"install_s": installed - started, "start_s": ready - installed, "first_answer_s": answered - ready,
            "total_s": answered - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clones", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="Keep the clones and their logs.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qastream-first-answer-"))
    pip_cache = work / "pip-cache"
    print(f"fresh clones of {ROOT} in {work}, pip cache {pip_cache} (empty), {os.cpu_count()} cores", flush=True)
    try:
        rows = [one_clone(work, i + 1, pip_cache) for i in range(args.clones)]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'clone':>5} {'make install':>13} {'make run ready':>15} {'first answer':>13} {'total':>8}")
    for i, row in enumerate(rows, 1):
        print(f"{i:>5} {row['install_s']:>12.0f}s {row['start_s']:>14.1f}s {row['first_answer_s']:>12.1f}s "
              f"{row['total_s']:>7.0f}s")
    sys.exit(0)


if __name__ == "__main__":
    main()
