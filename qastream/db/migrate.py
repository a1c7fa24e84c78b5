"""Schema migrations with Alembic, run programmatically.

Workers call :func:`upgrade` on start so the zero-setup SQLite default just
works; in production a one-shot job runs ``qastream db upgrade`` before the
workers start.  On PostgreSQL an advisory lock serialises concurrent
upgrades from several workers starting at once.
"""

from __future__ import annotations

import logging

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

_ADVISORY_LOCK_ID = 0x7161_7374  # "qast"


def alembic_config() -> Config:
    """Alembic configuration pointing at the packaged migration scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", "qastream.db:migrations")
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema of ``engine``'s database to ``revision``."""
    cfg = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
    logger.info("database schema at %s (%s)", revision, engine.url.render_as_string(hide_password=True))
