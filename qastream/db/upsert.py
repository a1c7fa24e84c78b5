"""``INSERT … ON CONFLICT`` for the two databases qastream runs on.

SQLAlchemy's portable ``insert`` has no upsert; each dialect has its own, with
the same ``on_conflict_do_nothing``/``on_conflict_do_update`` interface.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_for(connection: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's ``Insert`` of ``table``, which has ``on_conflict_*``."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"qastream supports PostgreSQL and SQLite, not {dialect}")
