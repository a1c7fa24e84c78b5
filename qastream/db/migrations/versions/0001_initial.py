"""questions and responses

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "questions",
        sa.Column("question_id", sa.String(16), primary_key=True),
        sa.Column("question_text", sa.Text(), nullable=False),
        sa.Column("original_answer", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error_class", sa.String(16), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
    )
    op.create_index("ix_questions_status", "questions", ["status"])
    op.create_table(
        "responses",
        sa.Column("question_id", sa.String(16), sa.ForeignKey("questions.question_id"), primary_key=True),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("bert_score", sa.Float(), nullable=True),
        sa.Column("first_score", sa.Float(), nullable=True),
        sa.Column("processing_attempts", sa.Integer(), nullable=False),
        sa.Column("error_retries", sa.Integer(), nullable=False),
        sa.Column("total_processing_time_ms", sa.Float(), nullable=False),
        sa.Column("llm_time_ms", sa.Float(), nullable=False),
        sa.Column("low_quality", sa.Boolean(), nullable=False),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("responses")
    op.drop_index("ix_questions_status", "questions")
    op.drop_table("questions")
