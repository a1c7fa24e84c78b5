"""``qastream inspect QUESTION_ID``: every record of one question, side by side.

A question lives in four places: the status table (where it is now, held by
the worker owning its partition), the attempts table (generations and
retries), the database (the record) and the cache (what a repeat gets).
When they disagree, that is where to start debugging.  The tables are read
over a worker's HTTP API (Faust's ``/table`` views route the request to the
owner), the database and Redis directly; an in-process cache lives in the
worker and cannot be read from here.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from datetime import datetime, timezone
from typing import Any, Optional

import click
import httpx
from faust.cli import argument, option

from qastream.app import app, settings
from qastream.db import queries
from qastream.policy.ids import is_question_id
from qastream.policy.lifecycle import State
from qastream.services.cache import cache_key
from qastream.services.storage import make_engine
from qastream.services.urls import redacted

NOT_FOUND = "(none)"


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``key: value`` lines of a JSON value, nested keys dotted; epoch times also shown in UTC."""
    if isinstance(value, dict):
        lines: list[tuple[str, str]] = []
        for key, item in value.items():
            lines.extend(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return lines
    if isinstance(value, (int, float)) and not isinstance(value, bool) and prefix.endswith("_at") and value > 1e9:
        when = datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return [(prefix, when)]
    text = value if isinstance(value, str) else json.dumps(value)
    return [(prefix or "value", text)]


def panel(title: str, value: Any, width: int) -> list[str]:
    """A titled block of wrapped ``key: value`` lines, ``width`` columns wide."""
    lines = [title, "-" * min(len(title), width)]
    if value is None or isinstance(value, str):
        lines.extend(textwrap.wrap(value or NOT_FOUND, width) or [NOT_FOUND])
        return lines
    for key, text in flatten(value):
        lines.extend(textwrap.wrap(f"{key}: {text}", width, subsequent_indent="    ") or [f"{key}:"])
    return lines


def side_by_side(panels: list[tuple[str, Any]], total_width: int) -> str:
    """The panels two per row, or one per row on a narrow terminal."""
    columns = 2 if total_width >= 100 else 1
    width = (total_width - 3 * (columns - 1)) // columns
    blocks = [panel(title, value, width) for title, value in panels]
    rows = []
    for i in range(0, len(blocks), columns):
        group = blocks[i:i + columns]
        height = max(len(block) for block in group)
        for line in range(height):
            cells = [(block[line] if line < len(block) else "").ljust(width) for block in group]
            rows.append(" | ".join(cells).rstrip())
        rows.append("")
    return "\n".join(rows).rstrip() + "\n"


def agreement(status_entry: Optional[dict], row: Optional[dict]) -> str:
    """One line on whether the status table and the database tell the same story."""
    if status_entry is None:
        if row is None:
            return "unknown question: neither the status table nor the database has it"
        return f"database only ({row['status']}): the status table does not know it (lost topics, or not yet)"
    if row is None:
        return f"status table only ({status_entry.get('state')}): no database row"
    state, status = status_entry.get("state"), row["status"]
    epochs = (status_entry.get("epoch"), row.get("epoch"))
    if state == status and epochs[0] == epochs[1]:
        return f"status table and database agree: {state}, epoch {epochs[0]}"
    if status == State.PENDING and state in (State.PROCESSING, State.RETRYING):
        return f"in flight: status table {state}, database pending (it is written at the end)"
    return f"they differ: status table {state} (epoch {epochs[0]}), database {status} (epoch {epochs[1]})"


async def http_get(client: httpx.AsyncClient, url: str) -> tuple[Optional[int], Any]:
    """(status code, JSON body or error text); ``None`` when the worker cannot be reached."""
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        return None, f"worker unreachable: {type(exc).__name__}: {exc}"
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


async def table_entry(client: httpx.AsyncClient, base: str, table: str, qid: str) -> tuple[Optional[dict], str]:
    """A table's entry from ``/table/<table>/<id>/``: (entry or None, note)."""
    code, body = await http_get(client, f"{base}/table/{table}/{qid}/")
    if code == 200 and isinstance(body, dict):
        return body, "present"
    if code is None:
        return None, body
    return None, f"no entry (HTTP {code}: {body.get('error') if isinstance(body, dict) else body})"


def database_row(qid: str) -> tuple[Optional[dict], str]:
    """The question's row as GET /status shows it, read from the configured database."""
    engine = make_engine(settings.resolved_database_url())
    try:
        with engine.connect() as connection:
            row = queries.lookup(connection, qid)
    except Exception as exc:  # no schema yet, database down: say so, keep the other panels
        return None, f"database error: {type(exc).__name__}: {exc}"
    finally:
        engine.dispose()
    return row, "present" if row else f"no row in {engine.url.render_as_string(hide_password=True)}"


async def cache_entry(qid: str) -> tuple[Optional[dict], str]:
    """The cached answer in Redis, with its remaining time to live."""
    if not settings.redis_url:
        return None, "in-process cache: not visible from the CLI (set QASTREAM_REDIS_URL for a shared cache)"
    import redis.asyncio as redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        raw = await client.get(cache_key(qid))
        ttl = await client.ttl(cache_key(qid))
    except Exception as exc:
        return None, f"redis error: {type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    if raw is None:
        return None, f"no key {cache_key(qid)} in {redacted(settings.redis_url)}"
    return {"key": cache_key(qid), "ttl_seconds": ttl, "value": json.loads(raw)}, "present"


@app.command(
    argument("question_id"),
    option("--url", default=None, help="Worker to ask for the tables (default http://WEB_HOST:WEB_PORT)."),
    option("--json", "as_json", is_flag=True, help="Print the four records as one JSON object."),
)
async def inspect(self, question_id: str, url: Optional[str], as_json: bool) -> None:
    """Show a question's status-table entry, attempt counts, database row and cache entry side by side."""
    if not is_question_id(question_id):
        # Raised from inside Faust's worker, a click exception would print a traceback.
        click.echo(f"Error: {question_id!r} is not a question id (16 hex digits, as POST /query returns)", err=True)
        raise SystemExit(2)
    base = (url or f"http://{settings.web_host}:{settings.web_port}").rstrip("/")
    async with httpx.AsyncClient(timeout=10) as client:
        status, status_note = await table_entry(client, base, "status", question_id)
        attempts, attempts_note = await table_entry(client, base, "attempts", question_id)
    row, row_note = database_row(question_id)
    cached, cache_note = await cache_entry(question_id)
    if as_json:
        print(json.dumps({"question_id": question_id, "status_table": status, "attempts_table": attempts,
                          "database": row, "cache": cached, "notes": {
                              "status_table": status_note, "attempts_table": attempts_note,
                              "database": row_note, "cache": cache_note},
                          "agreement": agreement(status, row)}, indent=2))
        return
    width = min(shutil.get_terminal_size((140, 40)).columns, 200)
    print(f"question {question_id}  (tables from {base})\n")
    print(side_by_side([
        ("status table", status if status is not None else status_note),
        ("attempts table", attempts if attempts is not None else attempts_note),
        ("database", row if row is not None else row_note),
        ("cache", cached if cached is not None else cache_note),
    ], width), end="")
    print(f"\n{agreement(status, row)}")
