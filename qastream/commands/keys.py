"""``qastream keys create|list|revoke``: the API keys of access control.

The key is printed once, by ``create``, alone on stdout (so a script can
capture it: ``KEY=$(qastream keys create ci --scope submit,read)``); only its
SHA-256 is stored.  These commands talk to the database and nothing else, so
they run without a worker: a mistake is one line on stderr and a non-zero
exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

import click
from faust.cli import AppCommand, argument, option
from sqlalchemy.exc import SQLAlchemyError

from qastream.app import app, settings
from qastream.db import keys as key_rows
from qastream.db.keys import KeyInfo
from qastream.db.migrate import upgrade
from qastream.policy.access import Limits, check_limits, parse_scopes
from qastream.policy.keys import check_name, hash_key, new_key
from qastream.services.storage import make_engine

ACTIONS = ("create", "list", "revoke")
COLUMNS = ("name", "scopes", "rate/s", "burst", "max in flight", "created", "last used", "revoked")


class DirectCommand(AppCommand):
    """A command that runs its coroutine directly instead of inside a Faust worker.

    Faust runs a command as a service of a worker, and wraps it in
    ``mode.worker.exiting``, which prints any exception with its traceback;
    a user's typo deserves one line.  A :class:`click.ClickException` is
    shown as click shows it (``Error: ...``, with the usage for a usage
    error) and exits with its code (SystemExit passes ``exiting`` by).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.run(self.run(*self.args, *args, **{**self.kwargs, **kwargs}))
        except click.ClickException as exc:
            exc.show()
            raise SystemExit(exc.exit_code) from None


def when(seconds: Optional[float]) -> str:
    """A time for the table, UTC to the second; ``-`` for never."""
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def limit(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:g}"


def key_table(infos: Sequence[KeyInfo]) -> str:
    """``keys list`` output: one aligned row per key, never the key or its hash."""
    rows = [COLUMNS] + [(k.name, k.scopes, limit(k.limits.rate), limit(k.limits.burst),
                         limit(k.limits.max_in_flight), when(k.created_at), when(k.last_used_at),
                         when(k.revoked_at)) for k in infos]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def on_database(fn: Any, *args: Any) -> Any:
    """Run one statement function in a transaction on the configured database (brought to the current schema)."""
    engine = make_engine(settings.resolved_database_url(), connect_timeout=settings.db_connect_timeout_seconds)
    try:
        upgrade(engine)
        with engine.begin() as connection:
            return fn(connection, *args)
    except SQLAlchemyError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise click.ClickException(f"database {where}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") \
            from None
    finally:
        engine.dispose()


def create(name: str, scopes: Optional[str], limits: Limits) -> None:
    if not scopes:
        raise click.UsageError("--scope is required: comma-separated from submit, read, metrics, admin")
    try:
        chosen = parse_scopes(scopes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from None
    key = new_key()
    try:
        on_database(key_rows.create, name, hash_key(key), chosen, limits, time.time())
    except key_rows.KeyExists as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created key {name!r}; it is shown once, below, and stored only as a hash", err=True)
    click.echo(key)


def revoke(name: str) -> None:
    revoked = on_database(key_rows.revoke, name, time.time())
    if revoked is None:
        raise click.ClickException(f"no key named {name!r} (see `qastream keys list`)")
    click.echo(f"key {name!r} revoked at {when(revoked)} UTC; workers refuse it within "
               f"{settings.auth_cache_seconds:g} s", err=True)


@app.command(
    argument("action", type=click.Choice(ACTIONS)),
    argument("name", required=False),
    option("--scope", "scopes", help="create: comma-separated scopes from submit, read, metrics, admin."),
    option("--rate", type=float, help="create: requests per second (default: unlimited)."),
    option("--burst", type=int, help="create: requests allowed at once above the rate (default: one second's)."),
    option("--max-in-flight", type=int, help="create: most unanswered questions at once (default: unlimited)."),
    base=DirectCommand,
)
async def keys(self: AppCommand, action: str, name: Optional[str], scopes: Optional[str], rate: Optional[float],
               burst: Optional[int], max_in_flight: Optional[int]) -> None:
    """Create (prints the key once), list or revoke API keys: keys create NAME --scope submit,read."""
    if action != "create" and (scopes or rate is not None or burst is not None or max_in_flight is not None):
        raise click.UsageError(f"--scope, --rate, --burst and --max-in-flight apply to create, not {action}")
    if action == "list":
        if name:
            raise click.UsageError("keys list takes no name")
        click.echo(key_table(on_database(key_rows.listing)))
        return
    if not name:
        raise click.UsageError(f"keys {action} needs a NAME")
    try:
        check_name(name)
        limits = check_limits(rate, burst, max_in_flight)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if action == "create":
        create(name, scopes, limits)
    else:
        revoke(name)
