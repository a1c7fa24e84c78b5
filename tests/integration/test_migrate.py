"""``qastream migrate`` into PostgreSQL with the Redis cache warmed, and ``qastream report`` on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from qastream.policy.ids import question_id
from qastream.services.cache import cache_key


def run_cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "qastream", *args], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"qastream {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result.stdout


def test_migrate_twice_on_postgres_warms_redis(postgres_url: str, redis_url: str, tmp_path: Path):
    token = uuid.uuid4().hex[:8]
    records = [{"question_text": f"What is record {i} of {token}?", "original_answer": "ref",
                "llm_answer": f"answer {i}", "bert_score": 0.5 + i / 10, "processing_attempts": i + 1,
                "total_processing_time_ms": 1000 * (i + 1), "timestamp": "2024-05-01T10:00:00Z",
                **({"first_score": 0.2} if i else {})} for i in range(3)]
    path = tmp_path / "history.json"
    path.write_text(json.dumps(records + [{"question_text": "no answer"}], indent=1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QASTREAM_")}
    env.update(QASTREAM_DATABASE_URL=postgres_url, QASTREAM_REDIS_URL=redis_url,
               QASTREAM_DATA_DIR=str(tmp_path / "var"))
    ids = [question_id(r["question_text"]) for r in records]
    client = redis.Redis.from_url(redis_url)
    try:
        first = run_cli(env, "migrate", str(path), "--batch-size", "2")
        assert "imported   3" in first and "duplicate  0" in first and "invalid    1" in first
        assert "no llm_answer" in first and "cached     3" in first
        cached = json.loads(client.get(cache_key(ids[2])))
        assert cached["answer"] == "answer 2" and cached["processing_attempts"] == 3

        second = run_cli(env, "migrate", str(path))
        assert "imported   0" in second and "duplicate  3" in second

        report = json.loads(run_cli(env, "report", "--json", "--threshold", "0.65"))
        assert report["total_responses"] == 3 and report["attempts_distribution"] == {"1": 1, "2": 1, "3": 1}
        assert [report["score_buckets"][b] for b in ("0.5-0.6", "0.6-0.7", "0.7-0.8")] == [1, 1, 1]
        assert report["below_threshold"] == 2  # 0.5 and 0.6; 0.7 passes
        assert report["regeneration"]["regenerated"] == 2
        assert report["regeneration"]["average_gain"] == pytest.approx(0.45)
        assert "regeneration (attempts > 1)" in run_cli(env, "report")
    finally:
        client.delete(*[cache_key(i) for i in ids])
        client.close()
