"""indexes for every query a request or a timer runs

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

A year of answers made ``/answers/latest``, reconciliation's pending scan and
the throughput windows sort or scan whole tables.  Each index below serves one
of those queries (see :mod:`qastream.db.schema`).  ``ix_questions_status`` goes:
``ix_questions_status_accepted_at`` starts with ``status`` and serves what it did,
and one index fewer is one write fewer on every status change.

The indexes are built inside the upgrade's transaction (not CONCURRENTLY), so
on PostgreSQL writes to a table wait while its index builds: seconds for a
year of rows, and the workers run the upgrade before they consume.
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_questions_status_accepted_at", "questions", ["status", "accepted_at"]),
    ("ix_questions_status_updated_at", "questions", ["status", "updated_at"]),
    ("ix_questions_accepted_at", "questions", ["accepted_at"]),
    ("ix_responses_updated_at_question_id", "responses", ["updated_at", "question_id"]),
    ("ix_responses_created_at", "responses", ["created_at"]),
    ("ix_responses_total_processing_time_ms", "responses", ["total_processing_time_ms"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    op.drop_index("ix_questions_status", "questions")


def downgrade() -> None:
    op.create_index("ix_questions_status", "questions", ["status"])
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table)
