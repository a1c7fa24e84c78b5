"""The main job as the README runs it: ``make run`` is ``qastream dev`` with the SmolLM2 backend.

No other test starts the smollm2 backend, so this is the one that notices when
the README's first command stops working (the GGUF lookup once imported a
package whose dependencies are not installed).  It runs the console script
of the virtualenv, on free ports, answers one real question with SmolLM2 and
BERTScore, and stops everything with Ctrl-C (SIGINT), checking by pid that no
process is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from stackutil import ARTIFACTS, Worker, wait_until

from qastream.devtools.embedded import free_port, http_ok, log_file, wait_for

QUESTION = "What is a compiler?"
REFERENCE = ("A compiler is a program that translates source code written in a high-level programming "
             "language into machine code that a computer can run.")


def children_of(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc: ppid is the fourth field of ``stat``)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:1]
    except OSError:
        return False


# `qastream dev` loads SmolLM2 and the scorer: up to 300 s before /health.
@pytest.mark.timeout(600)
def test_make_run_answers_a_real_question_and_stops_cleanly(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    web_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QASTREAM_")}
    env.update({
        "QASTREAM_APP_ID": f"qastream-main-{uuid.uuid4().hex[:8]}",
        "QASTREAM_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
        "QASTREAM_OLLAMA_URL": f"http://127.0.0.1:{free_port()}",
        "QASTREAM_WEB_PORT": str(web_port),
        "QASTREAM_DATA_DIR": str(tmp_path / "var"),
    })
    # The console script of this virtualenv, as `make run` calls it; default backend: smollm2.
    command = [str(Path(sys.executable).parent / "qastream"), "dev"]
    with log_file(str(ARTIFACTS), "main-job-dev") as log:  # the child has its own descriptor
        dev = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    worker = Worker(f"http://127.0.0.1:{web_port}", web_port, env, dev)
    try:
        wait_for(lambda: http_ok(f"{worker.url}/health"), dev, "qastream dev", timeout=300)
        spawned = children_of(dev.pid)
        assert len(spawned) >= 3, f"expected broker, LLM server and worker under qastream dev, got {spawned}"
        llm_logs = (tmp_path / "var" / "logs" / "llm-server.log").read_text(errors="replace")
        assert "smollm2" in llm_logs

        code, body = worker.query(QUESTION, REFERENCE)
        assert code == 202, body
        qid = body["question_id"]
        wait_until(lambda: worker.status(qid)[1].get("status") in ("completed", "failed"), 240,
                   "the SmolLM2 answer to be scored and stored")
        code, status = worker.status(qid)
        assert status["status"] == "completed", status
        result = status["result"]
        assert result["answer"].strip(), result
        assert isinstance(result["score"], float) and 0.0 <= result["score"] <= 1.0, result

        code, again = worker.query(QUESTION, REFERENCE)
        assert (code, again["status"], again["source"]) == (200, "found", "cache"), again
        assert again["result"]["answer"] == result["answer"]
    finally:
        spawned = children_of(dev.pid) if dev.poll() is None else set()
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            dev.kill()
            for pid in spawned:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            pytest.fail("qastream dev did not stop within 60 s of SIGINT")
    assert dev.returncode == 0, f"qastream dev exited with {dev.returncode}; see test-artifacts/main-job-dev.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in spawned):
        time.sleep(0.2)
    left = sorted(pid for pid in spawned if alive(pid))
    assert not left, f"processes left behind after SIGINT: {left}"
