"""Token and time accounting on the kept answers

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

``responses`` gains what the LLM spent on each question
(:class:`qastream.policy.usage.Usage`): prompt and generated tokens and the
generation and load time the server reported, summed over every attempt;
the tokens of the attempts whose answer was not kept (``wasted_tokens``);
and ``first_model``, the model of attempt 1, so ``qastream report`` can count
the questions that passed only after another model wrote the kept answer.

Rows written before hold 0 (nothing was counted) and a null ``first_model``.
A constant server default is a catalogue change on PostgreSQL 11+ and SQLite:
the upgrade rewrites no existing row, whatever the size of ``responses``.
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COUNTS = ("prompt_tokens", "eval_tokens", "wasted_tokens")
TIMES = ("eval_ms", "load_ms")


def upgrade() -> None:
    for name in COUNTS:
        op.add_column("responses", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))
    for name in TIMES:
        op.add_column("responses", sa.Column(name, sa.Float(), nullable=False, server_default="0"))
    op.add_column("responses", sa.Column("first_model", sa.String(128), nullable=True))


def downgrade() -> None:
    # Not batch mode: SQLite (3.35+) drops a column in place, where a table copy would break the foreign keys.
    for name in ("first_model", *reversed(TIMES), *reversed(COUNTS)):
        op.drop_column("responses", name)
