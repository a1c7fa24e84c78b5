"""The running totals' statements: add deltas in the writer's transaction, read them for ``/metrics``.

:mod:`qastream.db.stats` turns rows into deltas and totals into figures (pure);
this module is where those deltas meet the ``stats`` table.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table, and_, delete, select

from qastream.db import stats
from qastream.db.schema import StatRow
from qastream.db.upsert import insert_for

S: Table = StatRow.__table__  # type: ignore[assignment]  # declarative tables are Tables


def count(connection: Connection, deltas: stats.Deltas) -> None:
    """Add ``deltas`` to the running totals in the caller's transaction; prune old minute counters.

    ``n = n + excluded.n`` is a row-level increment, so workers writing at once
    never lose one another's counts.
    """
    rows = stats.rows_of(deltas)
    if not rows:
        return
    statement = insert_for(connection, S)
    connection.execute(statement.on_conflict_do_update(
        index_elements=["name", "key"], set_={"n": S.c.n + statement.excluded.n,
                                              "total": S.c.total + statement.excluded.total}), rows)
    minutes = [int(r["key"]) for r in rows if r["name"] in stats.MINUTE_NAMES]
    if minutes:
        oldest = f"{max(minutes) - stats.KEEP_MINUTES:010d}"
        connection.execute(delete(S).where(and_(S.c.name.in_(stats.MINUTE_NAMES), S.c.key < oldest)))


def read(connection: Connection) -> dict[str, Any]:
    """The database fields of ``GET /metrics``, from the running totals: a bounded read of ``stats``."""
    return stats.fold(connection.execute(
        select(S.c.name, S.c.key, S.c.n, S.c.total).where(S.c.name.not_in(stats.MINUTE_NAMES))))
