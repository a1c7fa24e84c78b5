"""``qastream db-upgrade`` and ``qastream settings``: schema and configuration."""

from __future__ import annotations

import sys

from faust.cli import option

from qastream.app import app
from qastream.app import settings as current
from qastream.db.migrate import upgrade
from qastream.services.storage import make_engine
from qastream.settings import render_env_file, render_markdown_table


@app.command()
async def db_upgrade(self) -> None:
    """Create or migrate the database schema (run once before production workers start)."""
    engine = make_engine(current.resolved_database_url())
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    self.say(f"schema is current at {engine.url.render_as_string(hide_password=True)}")


@app.command(option("--markdown", is_flag=True, help="Print the README's settings table instead."))
async def settings(self, markdown: bool) -> None:
    """Print every QASTREAM_* setting with its default (the text of config/defaults.env)."""
    # Written verbatim (no extra newline) so `qastream settings > config/defaults.env` is exact.
    sys.stdout.write(render_markdown_table() + "\n" if markdown else render_env_file())
