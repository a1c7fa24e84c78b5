"""``qastream migrate FILE``: import historical responses into the database and warm the cache."""

from __future__ import annotations

import time
from pathlib import Path

import click
from faust.cli import argument, option
from tqdm import tqdm

from qastream.app import app, cache, settings
from qastream.datasets.jsonfile import read_objects
from qastream.datasets.records import BadRows
from qastream.db.imports import BATCH_SIZE, import_batches, results_for, settle, validated
from qastream.db.migrate import upgrade
from qastream.services.storage import make_engine


@app.command(
    argument("path", type=click.Path(exists=True, dir_okay=False)),
    option("--batch-size", type=int, default=BATCH_SIZE, show_default=True, help="Records per transaction."),
    option("--no-cache", is_flag=True, help="Do not warm the cache with the imported answers."),
)
async def migrate(self, path: str, batch_size: int, no_cache: bool) -> None:
    """Import historical responses (JSON array or JSONL); questions already stored are skipped."""
    engine = make_engine(settings.resolved_database_url())
    warm = settings.redis_url and not no_cache
    bad = BadRows()
    imported = duplicates = cached = invalid_seen = 0
    started = time.perf_counter()
    try:
        upgrade(engine)
        if warm:
            await cache.start()
        records = validated(read_objects(path, bad), bad, max_chars=settings.max_question_chars)
        with tqdm(desc=f"importing {Path(path).name}", unit="record") as bar:
            for batch in import_batches(engine, records, batch_size=batch_size):
                imported += len(batch.imported)
                duplicates += batch.duplicates
                if warm and batch.imported:
                    results = results_for(engine, batch.imported)
                    await cache.put_many(results)
                    cached += len(results)
                bar.update(batch.records + bad.total - invalid_seen)  # invalid records count as read too
                invalid_seen = bad.total
                bar.set_postfix(imported=imported, duplicates=duplicates, invalid=bad.total)
        if imported:
            settle(engine)
    finally:
        if warm:
            await cache.stop()
        engine.dispose()
    seconds = time.perf_counter() - started
    total = imported + duplicates + bad.total
    self.say(f"{total} records in {seconds:.1f} s ({total / seconds if seconds else 0:.0f} records/s) "
             f"into {engine.url.render_as_string(hide_password=True)}")
    self.say(f"  imported   {imported}")
    self.say(f"  duplicate  {duplicates}  (question already stored, or repeated in the file)")
    self.say(f"  invalid    {bad.total}")
    for line in bad.lines():
        self.say("  " + line)
    if warm:
        self.say(f"  cached     {cached}  (Redis, {settings.cache_ttl_seconds} s TTL)")
    elif not no_cache:
        self.say("  cache: in-process (no QASTREAM_REDIS_URL), nothing to warm; workers cache answers on first read")
