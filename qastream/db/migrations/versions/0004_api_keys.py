"""API keys and question ownership for access control

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

``api_keys`` holds each key's name, the SHA-256 of the key (the key itself is
shown once by ``qastream keys create`` and stored nowhere), scopes and limits.
``question_owners`` records which key asked which question, so ``GET
/status`` can answer a key about its own questions only, and keeps an ``open``
flag per row for the in-flight bound (see :mod:`qastream.db.owners`).

Both tables start empty: questions asked before keys existed belong to no
key, and admin keys read them.  Nothing else changes, so the upgrade is quick
whatever the size of ``questions``.
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("burst", sa.Integer(), nullable=True),
        sa.Column("max_in_flight", sa.Integer(), nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.Column("last_used_at", when, nullable=True),
        sa.Column("revoked_at", when, nullable=True),
    )
    op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)
    op.create_index("ix_api_keys_name", "api_keys", ["name"], unique=True)
    op.create_table(
        "question_owners",
        sa.Column("key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), primary_key=True),
        sa.Column("question_id", sa.String(16), sa.ForeignKey("questions.question_id"), primary_key=True),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("asked_at", when, nullable=False),
    )
    for name, column in (("ix_question_owners_open_key_id", "key_id"),
                         ("ix_question_owners_open_question_id", "question_id")):
        op.create_index(name, "question_owners", [column], postgresql_where=sa.text("open"),
                        sqlite_where=sa.text("open = 1"))


def downgrade() -> None:
    op.drop_table("question_owners")
    op.drop_table("api_keys")
