"""Webhook deliveries, and where a question's end is announced

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

``webhook_deliveries`` holds each webhook event to send (its exact body) and
how its delivery went: pending, delivered or failed, attempts, the last
status and error.  ``questions.webhook_url`` is the URL ``POST /query`` was
given.  The table starts empty and the column is nullable with no default,
so the upgrade touches no existing row whatever the size of ``questions``.
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.add_column("questions", sa.Column("webhook_url", sa.Text(), nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column("delivery_id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.Column("updated_at", when, nullable=False),
        sa.Column("delivered_at", when, nullable=True),
    )
    op.create_index("ix_webhook_deliveries_subject_id", "webhook_deliveries", ["subject_id"])
    op.create_index("ix_webhook_deliveries_state_updated_at", "webhook_deliveries", ["state", "updated_at"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    # Not batch mode: SQLite (3.35+) drops a column in place, where a table copy would break the foreign keys.
    op.drop_column("questions", "webhook_url")
