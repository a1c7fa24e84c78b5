"""The tables of record.

``questions`` holds every accepted question and where it ended;
``responses`` holds the kept answer of each completed question.  Both are
keyed by ``question_id``, so every write is an upsert and a redelivered event
can never add a second row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of qastream's tables."""


class QuestionRow(Base):
    """An accepted question and its lifecycle state."""

    __tablename__ = "questions"

    question_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    question_text: Mapped[str] = mapped_column(Text)
    original_answer: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    epoch: Mapped[int] = mapped_column(Integer, default=1)
    accepted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    error_class: Mapped[Optional[str]] = mapped_column(String(16), nullable=True)
    error_message: Mapped[Optional[str]] = mapped_column(Text, nullable=True)


class ResponseRow(Base):
    """The answer kept for a question."""

    __tablename__ = "responses"

    question_id: Mapped[str] = mapped_column(String(16), ForeignKey("questions.question_id"), primary_key=True)
    answer: Mapped[str] = mapped_column(Text)
    bert_score: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    first_score: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    processing_attempts: Mapped[int] = mapped_column(Integer)
    error_retries: Mapped[int] = mapped_column(Integer, default=0)
    total_processing_time_ms: Mapped[float] = mapped_column(Float)
    llm_time_ms: Mapped[float] = mapped_column(Float, default=0.0)
    low_quality: Mapped[bool] = mapped_column(Boolean, default=False)
    model: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
