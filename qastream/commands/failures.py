"""``qastream dlq list|replay`` and ``qastream requeue``: dead letters and lost questions.

These run outside a worker: they read the database of record directly and
produce to the pending topic with the app's producer.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Callable

import click
from faust.cli import argument, option

from qastream.app import app
from qastream.app import settings as current
from qastream.db import queries
from qastream.db.migrate import upgrade
from qastream.policy.lifecycle import State
from qastream.services.storage import make_engine
from qastream.streaming.requeue import enqueue


def in_database(fn: Callable[..., Any], *args: Any, write: bool = False, **kwargs: Any) -> Any:
    """Run one query function on the configured database."""
    engine = make_engine(current.resolved_database_url())
    try:
        upgrade(engine)
        with (engine.begin() if write else engine.connect()) as connection:
            return fn(connection, *args, **kwargs)
    finally:
        engine.dispose()


async def produce(acceptances: list[queries.Acceptance]) -> int:
    await app.maybe_start_producer()
    count = await enqueue(acceptances)
    await app.producer.flush()
    return count


@app.command(
    argument("action", type=click.Choice(["list", "replay"])),
    argument("question_ids", nargs=-1),
    option("--all", "replay_all", is_flag=True, help="Replay every dead-lettered question."),
    option("--limit", type=int, default=100, show_default=True, help="Most entries to list."),
    option("--json", "as_json", is_flag=True, help="List as JSON."),
)
async def dlq(self, action: str, question_ids: tuple[str, ...], replay_all: bool, limit: int,
              as_json: bool) -> None:
    """List dead-lettered questions, or replay them (IDs, or --all) with a fresh attempt budget."""
    if action == "list":
        entries = in_database(queries.failed, limit)
        if as_json:
            print(json.dumps(entries, indent=2))
            return
        for e in entries:
            when = datetime.fromtimestamp(e["failed_at"], tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            print(f"{e['question_id']}  {when}  {e['error_class']:<9}  {e['reason']}")
        print(f"{len(entries)} dead-lettered question(s)")
        return
    if not question_ids and not replay_all:
        raise click.UsageError("name question ids to replay, or pass --all")
    taken = in_database(queries.resubmit, time.time(), statuses=[State.FAILED],
                        question_ids=None if replay_all else list(question_ids), write=True)
    missing = set(question_ids) - {a.question_id for a in taken}
    for qid in sorted(missing):
        print(f"{qid}: not a dead-lettered question, skipped")
    print(f"replayed {await produce(taken)} question(s)")


@app.command(
    option("--older-than", type=float, default=60.0, show_default=True,
           help="Only questions accepted at least this many seconds ago."),
)
async def requeue(self, older_than: float) -> None:
    """Re-enqueue accepted questions that are not terminal (e.g. after the broker lost its topics).

    Each starts a new epoch, so a question that was in fact still in flight
    is not answered twice: its old messages are skipped as stale.
    """
    taken = in_database(queries.resubmit, time.time(), statuses=[State.PENDING],
                        accepted_before=time.time() - older_than, write=True)
    print(f"re-enqueued {await produce(taken)} question(s)")
