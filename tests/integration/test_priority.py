"""An interactive question overtakes a 2,000-question bulk backlog (issue 15, item 6).

The LLM has 8 slots and answers in 1 s, so the backlog takes ~250 s to
drain.  With it queued on the bulk lane and the LLM saturated with bulk
calls, a question asked through ``POST /query`` must start generating before
every bulk question that had not started when it was asked.  The order is
read from the status events every stage writes (``question-events``, each
stamped by the worker's clock when the stage began): between the question's
``queued`` and its ``generating``, at most one round of the 8 slots may go
to bulk questions -- the slots that free while its message is on its way to
the worker, which cannot know of it yet -- and none once it waits at the gate.
Without lanes it would start after the whole backlog.

The worker's stream buffer is shrunk to 256 messages so that the backlog is
far larger than it: this is the case where Faust's fetch loop blocked on the
full bulk buffer and never delivered the interactive question (before
qastream.streaming.broker.max_poll_records: the question was not answered
within 120 s).  The test asserts the order, not seconds; bench/priority.py
measures the time.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from stackutil import isolated_env, launch_llm, read_events, wait_until

from qastream.devtools.embedded import stop

BULK = 2000
SLOTS = 8

def llm_completions(url: str) -> int:
    with urllib.request.urlopen(f"{url}/admin/stats", timeout=5) as response:
        return json.loads(response.read()).get("completions", 0)




def load_bulk(env: dict[str, str], path: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "qastream", "load", str(path), "--via", "kafka", "--lane", "bulk",
                             "--concurrency", "32"], env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"qastream load failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.mark.timeout(600)
def test_an_interactive_question_overtakes_a_bulk_backlog(broker, artifacts, postgres_url, tmp_path,
                                                          start_worker_process):
    slow = launch_llm(artifacts, "llm-priority", "--parallel", str(SLOTS), "--latency", "1.0")
    try:
        env = {**isolated_env(broker, slow, tmp_path / "var"), "QASTREAM_DATABASE_URL": postgres_url,
               "QASTREAM_SCORER_ENABLED": "false", "QASTREAM_LLM_CONCURRENCY": str(SLOTS),
               "QASTREAM_STREAM_BUFFER_MAXSIZE": "256"}
        token = uuid.uuid4().hex[:8]
        dataset = tmp_path / "bulk.jsonl"
        dataset.write_text("".join(json.dumps({"question_text": f"What is item {i} of backlog {token}?",
                                               "original_answer": f"Item {i} of backlog {token}."}) + "\n"
                                   for i in range(BULK)))
        # Queued before the worker starts: its first fetches find the whole backlog at once.
        summary = load_bulk(env, dataset)
        assert f"accepted                    {BULK}" in summary, summary
        worker = start_worker_process(env)
        wait_until(lambda: llm_completions(slow.url) >= 2 * SLOTS, 180, "the LLM to be busy with bulk questions")

        code, body = worker.query(f"Which lane is this question {token} on?")
        assert code == 202, body
        qid = body["question_id"]
        wait_until(lambda: worker.status(qid)[1].get("status") == "completed", 120,
                   "the interactive question to complete", interval=0.1)

        events = asyncio.run(read_events(broker, env["QASTREAM_TOPIC_PREFIX"] + "question-events"))
        mine = {e["stage"]: e["at"] for e in events if e["question_id"] == qid}
        bulk_started = {e["question_id"]: e["at"] for e in events if e["stage"] == "generating" and e["question_id"] != qid}
        passed_it = [at for at in bulk_started.values() if mine["queued"] < at < mine["generating"]]
        print(f"interactive question: queued -> generating {mine['generating'] - mine['queued']:.2f} s, "
              f"-> scoring {mine['scoring'] - mine['queued']:.2f} s, -> completed "
              f"{mine['completed'] - mine['queued']:.2f} s; {len(passed_it)} bulk generations started meanwhile, "
              f"{len(bulk_started)} bulk questions started in all")
        assert len(bulk_started) <= BULK // 2, "the backlog drained before the question was asked: it proves nothing"
        assert len(passed_it) <= SLOTS, (
            f"{len(passed_it)} bulk questions started generating while the interactive one waited "
            f"({mine['generating'] - mine['queued']:.1f} s): more than one round of the {SLOTS} slots")
    finally:
        stop(slow.process, "llm")
