"""``qastream migrate`` throughput: 100,000 historical records into SQLite and PostgreSQL.

Writes a JSON Lines file of synthetic records with the seed's field names,
runs the real command (``qastream migrate FILE``, process start-up included)
into a fresh SQLite file and a fresh PostgreSQL schema, then runs it again to
time the all-duplicates pass.  Prints records/s for each; the goal is under a
minute per 100,000 records.

    .venv/bin/python bench/migrate.py [--records 100000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

DEFAULT_POSTGRES = os.environ.get("QASTREAM_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def record_text(token: str, i: int) -> str:
    return f"What is item {i} of the {token} archive, and why does it matter?"


def write_records(path: Path, count: int) -> str:
    """``count`` records in JSON Lines; returns the token in their questions (:func:`record_text`)."""
    rng = random.Random(1)
    token = uuid.uuid4().hex[:8]
    with open(path, "w") as handle:
        for i in range(count):
            attempts = rng.choice((1, 1, 1, 2, 2, 3))
            handle.write(json.dumps({
                "question_text": record_text(token, i),
                "original_answer": f"Item {i} is a reference answer of about twenty words, written for "
                                   "the benchmark so the rows have a realistic size.",
                "llm_answer": f"Item {i} is an answer the earlier system generated; it is a little longer than "
                              "the reference and says roughly the same thing in other words.",
                "bert_score": round(rng.uniform(0.5, 0.95), 4), "processing_attempts": attempts,
                "total_processing_time_ms": round(rng.uniform(800, 9000), 1),
                "timestamp": f"2024-05-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
            }) + "\n")
    return token


def run(env: dict[str, str], path: Path) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "qastream", "migrate", str(path), "--no-cache"], env=env,
                            capture_output=True, text=True, check=True)
    return time.perf_counter() - started, result.stdout


def counts(output: str) -> str:
    imported = re.search(r"imported\s+(\d+)", output).group(1)
    duplicate = re.search(r"duplicate\s+(\d+)", output).group(1)
    return f"imported {imported}, duplicate {duplicate}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL ('' to skip)")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith("QASTREAM_")}
    with tempfile.TemporaryDirectory(prefix="qastream-bench-migrate-") as tmp:
        path = Path(tmp) / "history.jsonl"
        write_records(path, args.records)
        print(f"{args.records} records, {path.stat().st_size / 1e6:.1f} MB of JSON Lines, {os.cpu_count()} cores")
        targets = [("SQLite", {"QASTREAM_DATA_DIR": tmp}, None)]
        if args.postgres:
            from sqlalchemy import create_engine, text

            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(args.postgres)
            with admin.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            targets.append(("PostgreSQL", {"QASTREAM_DATA_DIR": tmp, "QASTREAM_DATABASE_URL":
                                           f"{args.postgres}?options=-csearch_path%3D{schema}"}, schema))
        try:
            for name, extra, _ in targets:
                env = {**base, **extra}
                for label in ("first import", "second (duplicates)"):
                    seconds, output = run(env, path)
                    print(f"{name:<10} {label:<20} {seconds:6.1f} s  {args.records / seconds:8.0f} records/s  "
                          f"({counts(output)})", flush=True)
        finally:
            for _, _, schema in targets:
                if schema:
                    with admin.begin() as connection:
                        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                    admin.dispose()


if __name__ == "__main__":
    main()
