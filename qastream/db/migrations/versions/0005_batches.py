"""Batches of questions and their lines

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``batches`` holds each ``POST /batches`` job (status, total, timestamps,
metadata as JSON text, the webhook URL and when the end-of-batch hook ran,
the key that submitted it); ``batch_items`` one row per line of a batch,
keyed by (batch, line), with the line's ``custom_id`` and question.  Both
start empty and nothing else changes, so the upgrade is quick whatever the
size of ``questions``.  Cancelled questions need no schema change: the
``status`` column is a string and ``cancelled`` one more value of it.
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("updated_at", when, nullable=False),
        sa.Column("finished_at", when, nullable=True),
        sa.Column("cancelled_at", when, nullable=True),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("notified_at", when, nullable=True),
        sa.Column("owner_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=True),
    )
    op.create_index("ix_batches_created_at_batch_id", "batches", ["created_at", "batch_id"])
    op.create_index("ix_batches_owner_key_id_created_at", "batches", ["owner_key_id", "created_at", "batch_id"])
    op.create_index("ix_batches_status_notified_at", "batches", ["status", "notified_at"])
    op.create_table(
        "batch_items",
        sa.Column("batch_id", sa.String(32), sa.ForeignKey("batches.batch_id"), primary_key=True),
        sa.Column("line", sa.Integer(), primary_key=True),
        sa.Column("custom_id", sa.Text(), nullable=True),
        sa.Column("question_id", sa.String(16), sa.ForeignKey("questions.question_id"), nullable=False),
    )
    op.create_index("ix_batch_items_question_id", "batch_items", ["question_id"])


def downgrade() -> None:
    op.drop_table("batch_items")
    op.drop_table("batches")
