"""The tables of record.

``questions`` holds every accepted question and where it ended;
``responses`` holds the kept answer of each completed question.  Both are
keyed by ``question_id``, so every write is an upsert and a redelivered event
can never add a second row.

The indexes are the ones a request or a timer needs (migration 0002 adds them
to a database made by 0001); each names the query it serves.  ``db/report.py``
has none of its own: a report may scan.

``stats`` holds the running totals ``/metrics`` reads (see :mod:`qastream.db.stats`),
written in the same transaction as the rows they count.

``api_keys`` holds the keys of access control by the hash of the key (never
the key), and ``question_owners`` which key asked which question, with an
``open`` flag the acceptance sets and the store and dead-letter writes clear,
so counting a key's questions in flight reads only its open rows.

``batches`` holds each ``POST /batches`` job and ``batch_items`` its lines,
one row per line (a question asked twice in a batch has two items and one
question row); a batch's counts and results join its items to ``questions``
and ``responses`` by primary key, so they cost what the batch holds.

``webhook_deliveries`` holds each webhook event to send and how its delivery
went; ``questions.webhook_url`` is where a question's end is announced.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of qastream's tables."""


class QuestionRow(Base):
    """An accepted question and its lifecycle state."""

    __tablename__ = "questions"
    __table_args__ = (
        # Reconciliation's pending_before and resubmit (status = ?, oldest accepted_at first, LIMIT);
        # its prefix serves any filter on status, so no index on status alone.
        Index("ix_questions_status_accepted_at", "status", "accepted_at"),
        # /dlq's failed() (status = failed, newest updated_at first).
        Index("ix_questions_status_updated_at", "status", "updated_at"),
        # Migration 0003's backfill of the accepted-per-minute counters (the requests read ``stats``).
        Index("ix_questions_accepted_at", "accepted_at"),
    )

    question_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    question_text: Mapped[str] = mapped_column(Text)
    original_answer: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    epoch: Mapped[int] = mapped_column(Integer, default=1)
    accepted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    error_class: Mapped[Optional[str]] = mapped_column(String(16), nullable=True)
    error_message: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    #: Where to announce the question's end (``POST /query``'s ``webhook_url``); the last submission's wins.
    webhook_url: Mapped[Optional[str]] = mapped_column(Text, nullable=True)


class ResponseRow(Base):
    """The answer kept for a question."""

    __tablename__ = "responses"
    __table_args__ = (
        # /answers/latest: newest updated_at first, question_id breaking ties, LIMIT n read from the index end.
        Index("ix_responses_updated_at_question_id", "updated_at", "question_id"),
        # Migration 0003's backfill of the completed-per-minute counters (the requests read ``stats``).
        Index("ix_responses_created_at", "created_at"),
        # ``qastream report``'s exact percentiles: ORDER BY total_processing_time_ms OFFSET rank walks the index.
        Index("ix_responses_total_processing_time_ms", "total_processing_time_ms"),
    )

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
    # What the LLM spent on the question (qastream.policy.usage.Usage), migration 0007: 0 for older rows.
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    eval_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    eval_ms: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    load_ms: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    wasted_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: The model of attempt 1; differing from ``model`` means a later model wrote the kept answer.
    first_model: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)


class StatRow(Base):
    """One running total of :mod:`qastream.db.stats`: a count ``n`` and a float sum ``total``."""

    __tablename__ = "stats"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[float] = mapped_column(Float, default=0.0)


class ApiKeyRow(Base):
    """An API key: its name, the SHA-256 of the key, its scopes and limits (:mod:`qastream.policy.access`)."""

    __tablename__ = "api_keys"
    __table_args__ = (
        # Every authenticated request looks its key up by hash.
        Index("ix_api_keys_key_hash", "key_hash", unique=True),
        # ``qastream keys revoke NAME``; names are what people and logs use.
        Index("ix_api_keys_name", "name", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(64))
    rate: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    burst: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    max_in_flight: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True), nullable=True)


class QuestionOwnerRow(Base):
    """A key asked a question; ``open`` until the question is stored or dead-lettered.

    The primary key (key, question) answers "did this key ask it" for
    ``GET /status``; a question asked by two keys has two rows.
    """

    __tablename__ = "question_owners"
    __table_args__ = (
        # The in-flight bound counts a key's open questions: partial, so it holds only those.  The
        # condition is spelled as each dialect renders ``open`` in a query, so the planner matches it.
        Index("ix_question_owners_open_key_id", "key_id", postgresql_where=text("open"),
              sqlite_where=text("open = 1")),
        # save_completed/save_failed close the open rows of the questions they finish.
        Index("ix_question_owners_open_question_id", "question_id", postgresql_where=text("open"),
              sqlite_where=text("open = 1")),
    )

    key_id: Mapped[int] = mapped_column(Integer, ForeignKey("api_keys.id"), primary_key=True)
    question_id: Mapped[str] = mapped_column(String(16), ForeignKey("questions.question_id"), primary_key=True)
    open: Mapped[bool] = mapped_column(Boolean)
    asked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BatchRow(Base):
    """A batch of questions submitted together (``POST /batches``), with its lifecycle and webhook."""

    __tablename__ = "batches"
    __table_args__ = (
        # GET /batches for an admin: newest first, batch_id breaking ties, LIMIT n read from the index end.
        Index("ix_batches_created_at_batch_id", "created_at", "batch_id"),
        # GET /batches for a key: its own batches, newest first.
        Index("ix_batches_owner_key_id_created_at", "owner_key_id", "created_at", "batch_id"),
        # The completion timer: batches not finished yet, and finished ones whose hook has not run.
        Index("ix_batches_status_notified_at", "status", "notified_at"),
    )

    batch_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True), nullable=True)
    cancelled_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True), nullable=True)
    # ``metadata`` is the column; the attribute cannot share the name with the declarative MetaData.
    meta: Mapped[Optional[str]] = mapped_column("metadata", Text, nullable=True)
    webhook_url: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    notified_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True), nullable=True)
    owner_key_id: Mapped[Optional[int]] = mapped_column(Integer, ForeignKey("api_keys.id"), nullable=True)


class BatchItemRow(Base):
    """One line of a batch: its ``custom_id`` and the question it asked."""

    __tablename__ = "batch_items"
    __table_args__ = (
        # Which batches hold a question (cancelling a question, a webhook per question later).
        Index("ix_batch_items_question_id", "question_id"),
    )

    batch_id: Mapped[str] = mapped_column(String(32), ForeignKey("batches.batch_id"), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    custom_id: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    question_id: Mapped[str] = mapped_column(String(16), ForeignKey("questions.question_id"))
class WebhookDeliveryRow(Base):
    """One webhook event for one subject to one URL, and how its delivery went (:mod:`qastream.db.webhooks`).

    ``delivery_id`` is derived from the event and its subject, so scheduling
    the same event twice finds this row instead of adding one.  ``body`` is
    the exact JSON every attempt sends, so each carries the same signature.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # GET /batches/{id} (and a question's deliveries) read a subject's deliveries.
        Index("ix_webhook_deliveries_subject_id", "subject_id"),
        # The sweep that re-sends pending deliveries whose message was lost (oldest updated_at first).
        Index("ix_webhook_deliveries_state_updated_at", "state", "updated_at"),
    )

    delivery_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    last_error: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True), nullable=True)
