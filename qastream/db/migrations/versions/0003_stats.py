"""running totals for /metrics

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

``/metrics`` aggregated the whole ``questions`` and ``responses`` tables on
every request.  The ``stats`` table keeps those totals as the rows are
written (:mod:`qastream.db.stats`); this upgrade fills it once from the
existing rows, the one time the totals are computed by a scan.  The
throughput counters are filled for the minutes :data:`stats.KEEP_MINUTES`
keeps, relative to the time of the upgrade.
"""
import time

import sqlalchemy as sa
from alembic import op

from qastream.db import stats
from qastream.db.queries import to_datetime, to_seconds

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "stats",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
    )
    op.bulk_insert(table, stats.rows_of(backfill(op.get_bind(), time.time())))


def backfill(connection: sa.Connection, now: float) -> stats.Deltas:
    """The running totals of the rows in the database, counted as the writes count them."""
    when = sa.DateTime(timezone=True)
    questions = sa.table("questions", sa.column("status", sa.String), sa.column("error_class", sa.String),
                         sa.column("accepted_at", when), sa.column("updated_at", when))
    responses = sa.table("responses", sa.column("bert_score", sa.Float), sa.column("low_quality", sa.Boolean),
                         sa.column("error_retries", sa.Integer), sa.column("processing_attempts", sa.Integer),
                         sa.column("total_processing_time_ms", sa.Float), sa.column("created_at", when))
    deltas = stats.new_deltas()
    for status, error_class, n in connection.execute(
            sa.select(questions.c.status, questions.c.error_class, sa.func.count())
            .group_by(questions.c.status, questions.c.error_class)):
        stats.add(deltas, stats.STATUS, status, n)
        if status == "failed":
            stats.add(deltas, stats.FAILED_CLASS, error_class or "unknown", n)
    for row in connection.execute(sa.select(responses)).mappings():
        stats.add_response(deltas, row, 1)
    since = to_datetime(now - 60 * stats.KEEP_MINUTES)
    for name, column, where in ((stats.ACCEPTED, questions.c.accepted_at, sa.true()),
                                (stats.COMPLETED, responses.c.created_at, sa.true()),
                                (stats.FAILED, questions.c.updated_at, questions.c.status == "failed")):
        for (at,) in connection.execute(sa.select(column).where(sa.and_(column >= since, where))):
            stats.add(deltas, name, stats.minute_key(to_seconds(at)))
    return deltas


def downgrade() -> None:
    op.drop_table("stats")
