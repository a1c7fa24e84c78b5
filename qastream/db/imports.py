"""Importing historical responses (``qastream migrate``): validate, then insert only what is new.

Records come from an earlier system's export (JSON array or JSON Lines) with
the seed's field names or plain ones.  Each is validated into a
:class:`Historical`; its ``question_id`` is computed from the question text
the way every other part of qastream computes it (an id carried by the export
is ignored: an id from another scheme would split one question in two).

Rows are written in batches, one transaction each: the question row is
inserted with ``ON CONFLICT DO NOTHING RETURNING question_id`` and only the
questions that come back get their response row.  A question already in the
database (from the pipeline or an earlier import) is a duplicate and left as
it is, so importing the same file twice imports nothing the second time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from sqlalchemy import Connection, Engine, text

from qastream.datasets.jsonfile import first_of
from qastream.datasets.records import BadRows
from qastream.db import stats
from qastream.db.queries import JOINED, Answer, Q, R, response_values, result_from_row, to_datetime
from qastream.db.totals import S, count
from qastream.db.upsert import insert_for
from qastream.errors import PermanentError
from qastream.policy.ids import normalise, question_id
from qastream.policy.lifecycle import State

QUESTION_FIELDS = ("question_text", "question")
REFERENCE_FIELDS = ("original_answer", "reference_answer")
#: In an export of responses, ``answer`` is the LLM's answer (the reference is ``original_answer``).
ANSWER_FIELDS = ("llm_answer", "llm_response", "response", "answer")
SCORE_FIELDS = ("bert_score", "score", "bertscore")
ATTEMPT_FIELDS = ("processing_attempts", "attempts")
TIME_FIELDS = ("total_processing_time_ms", "processing_time_ms")
TIMESTAMP_FIELDS = ("timestamp", "created_at", "completed_at", "updated_at")

BATCH_SIZE = 1000


class InvalidRecord(PermanentError, ValueError):
    """A record that cannot be imported; the message is the reason counted in the summary.

    Raised while validating a historical record (``qastream import``): the
    record is skipped and counted, the import goes on.  Still a ``ValueError``.
    """


@dataclass(frozen=True)
class Historical(Answer):
    """A validated historical response: an answer with no acceptance of this system behind it."""


@dataclass(frozen=True)
class BatchResult:
    """What one batch did: the ids inserted and how many records were duplicates."""

    imported: list[str]
    duplicates: int
    records: int


def _number(obj: Mapping[str, Any], names: tuple[str, ...], what: str) -> Optional[float]:
    value = first_of(obj, names)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise InvalidRecord(f"{what} is not a number") from None
        else:
            raise InvalidRecord(f"{what} is not a number")
    if not math.isfinite(value):
        raise InvalidRecord(f"{what} is not a finite number")
    return float(value)


def _count(obj: Mapping[str, Any], names: tuple[str, ...], what: str, default: int, minimum: int) -> int:
    value = _number(obj, names, what)
    if value is None:
        return default
    if value != int(value) or value < minimum:
        raise InvalidRecord(f"{what} is not an integer >= {minimum}")
    return int(value)


def _text(obj: Mapping[str, Any], names: tuple[str, ...], what: str, max_chars: int,
          required: bool) -> Optional[str]:
    value = first_of(obj, names)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidRecord(f"no {what}")
        return None
    if not isinstance(value, str):
        raise InvalidRecord(f"{what} is not a string")
    if len(value) > max_chars:
        raise InvalidRecord(f"{what} longer than {max_chars} characters")
    return value.strip()


def parse_timestamp(value: Any) -> float:
    """Epoch seconds from an ISO 8601 string (UTC when it has no zone) or epoch seconds / milliseconds."""
    if isinstance(value, bool):
        raise InvalidRecord("timestamp is not a date")
    if isinstance(value, (int, float)):
        seconds = float(value) / 1000.0 if value > 1e11 else float(value)  # 1e11 s is the year 5138
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRecord("timestamp is not ISO 8601 or epoch seconds") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        seconds = parsed.timestamp()
    else:
        raise InvalidRecord("timestamp is not ISO 8601 or epoch seconds")
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidRecord("timestamp is not a date")
    return seconds


def parse_historical(obj: Mapping[str, Any], *, max_chars: int, now: float) -> Historical:
    """Validate one exported record; raises :class:`InvalidRecord` with the reason."""
    text = _text(obj, QUESTION_FIELDS, "question_text", max_chars, required=True)
    assert text is not None
    if not normalise(text):
        raise InvalidRecord("no question_text")
    reference = _text(obj, REFERENCE_FIELDS, "original_answer", max_chars, required=False)
    answer = _text(obj, ANSWER_FIELDS, "llm_answer", 1_000_000, required=True)
    assert answer is not None
    score = _number(obj, SCORE_FIELDS, "bert_score")
    first_score = _number(obj, ("first_score",), "first_score")
    for name, value in (("bert_score", score), ("first_score", first_score)):
        if value is not None and not -1.0 <= value <= 1.0:
            raise InvalidRecord(f"{name} outside [-1, 1]")
    attempts = _count(obj, ATTEMPT_FIELDS, "processing_attempts", 1, 1)
    retries = _count(obj, ("error_retries", "retries"), "error_retries", 0, 0)
    total_ms = _number(obj, TIME_FIELDS, "total_processing_time_ms")
    llm_ms = _number(obj, ("llm_time_ms",), "llm_time_ms")
    if (total_ms is not None and total_ms < 0) or (llm_ms is not None and llm_ms < 0):
        raise InvalidRecord("processing time is negative")
    low_quality = obj.get("low_quality", False)
    if not isinstance(low_quality, bool):
        raise InvalidRecord("low_quality is not true or false")
    stamp = first_of(obj, TIMESTAMP_FIELDS)
    at = now if stamp is None else parse_timestamp(stamp)
    model = first_of(obj, ("model", "llm_model"))
    return Historical(
        question_id=question_id(text), question_text=text, original_answer=reference, answer=answer, score=score,
        first_score=first_score, processing_attempts=attempts, error_retries=retries,
        total_processing_time_ms=total_ms or 0.0, llm_time_ms=llm_ms or 0.0, low_quality=low_quality,
        model=None if model is None else str(model)[:128], at=at,
    )


def validated(objects: Iterable[tuple[str, Mapping[str, Any]]], bad: BadRows, *, max_chars: int,
              now: Optional[float] = None) -> Iterator[Historical]:
    """The valid records of ``(where, object)`` pairs; invalid ones are counted in ``bad``."""
    now = time.time() if now is None else now
    for where, obj in objects:
        try:
            yield parse_historical(obj, max_chars=max_chars, now=now)
        except InvalidRecord as exc:
            bad.add(str(exc), where)


def insert_absent(connection: Connection, records: Sequence[Historical], now: Optional[float] = None) -> BatchResult:
    """Insert the records whose question is not in the database yet, in the caller's transaction.

    Throughput counters are kept per minute for the last ``KEEP_MINUTES``
    only, so a historical answer older than that adds none: adding them
    would insert a row per old minute that the same transaction deletes,
    and on PostgreSQL a million imported answers left ``stats`` with a
    million dead rows that every ``/metrics`` read scanned.
    """
    recent_since = (time.time() if now is None else now) - stats.KEEP_MINUTES * 60
    unique: dict[str, Historical] = {}
    for record in records:
        unique.setdefault(record.question_id, record)  # the first of a repeated question wins
    if not unique:
        return BatchResult([], len(records), len(records))
    questions = [{
        "question_id": r.question_id, "question_text": r.question_text, "original_answer": r.original_answer,
        "status": State.COMPLETED, "epoch": 1, "accepted_at": to_datetime(r.at - r.total_processing_time_ms / 1000.0),
        "updated_at": to_datetime(r.at), "error_class": None, "error_message": None,
    } for r in unique.values()]
    inserted = {row.question_id for row in connection.execute(
        insert_for(connection, Q).on_conflict_do_nothing(index_elements=["question_id"]).returning(Q.c.question_id),
        questions)}
    fresh = [r for qid, r in unique.items() if qid in inserted]
    if fresh:
        rows = [response_values(r) for r in fresh]
        connection.execute(insert_for(connection, R).on_conflict_do_nothing(index_elements=["question_id"]), rows)
        deltas = stats.new_deltas()
        for record, row in zip(fresh, rows):  # each question row is new, so each answer is too
            stats.add_response(deltas, row, 1)
            stats.add_transition(deltas, None, (State.COMPLETED, None))
            accepted_at = record.at - record.total_processing_time_ms / 1000.0
            if accepted_at >= recent_since:
                stats.add(deltas, stats.ACCEPTED, stats.minute_key(accepted_at))
            if record.at >= recent_since:
                stats.add(deltas, stats.COMPLETED, stats.minute_key(record.at))
        count(connection, deltas)
    imported = [r.question_id for r in fresh]
    return BatchResult(imported, len(records) - len(imported), len(records))


def import_batches(engine: Engine, records: Iterable[Historical], *,
                   batch_size: int = BATCH_SIZE) -> Iterator[BatchResult]:
    """Import ``records`` in transactions of ``batch_size``; yields each batch's result."""
    batch: list[Historical] = []
    for record in records:
        batch.append(record)
        if len(batch) >= batch_size:
            yield _commit(engine, batch)
            batch = []
    if batch:
        yield _commit(engine, batch)


def _commit(engine: Engine, batch: Sequence[Historical]) -> BatchResult:
    # Committed before the caller sees the result: yielding inside the
    # transaction would let the caller read (and cache) rows not yet visible.
    with engine.begin() as connection:
        return insert_absent(connection, batch)


def settle(engine: Engine) -> None:
    """After a bulk import on PostgreSQL: vacuum and analyze the tables it wrote.

    The planner has no statistics for a million new rows until autovacuum
    gets to them, and the counter rows of ``stats`` were rewritten once per
    batch; ``/metrics`` and ``/answers/latest`` should be as fast right after
    an import as a day later.  SQLite needs neither.
    """
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"VACUUM (ANALYZE) {S.name}, {Q.name}, {R.name}"))


def results_for(engine: Engine, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The results POST /query would answer for ``ids`` (what the cache holds)."""
    if not ids:
        return []
    with engine.connect() as connection:
        return [result_from_row(row) for row in connection.execute(JOINED.where(Q.c.question_id.in_(list(ids))))]
