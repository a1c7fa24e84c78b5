"""What happened recently, from the database: throughput windows and the latest answers.

The database is the deployment-wide record, so these figures are the same on
every worker and count every worker's work.  An answer is counted in the
minute it was first stored, so a regenerated or redelivered answer is not
counted twice.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from sqlalchemy import Connection, and_, select

from qastream.db import stats
from qastream.db.owners import OWN
from qastream.db.queries import Q, R, to_seconds
from qastream.db.totals import S

#: Throughput windows, in minutes.
WINDOWS = (1, 5)
MAX_LATEST = 200


def throughput(connection: Connection, now: float, windows: Sequence[int] = WINDOWS) -> dict[str, Any]:
    """Questions per minute that were accepted, completed and failed over the last ``windows`` minutes.

    Read from the per-minute counters of :mod:`qastream.db.stats`: at most
    ``3 * (max(windows) + 1)`` rows, whatever the size of the tables.
    """
    rows = connection.execute(select(S.c.name, S.c.key, S.c.n).where(and_(
        S.c.name.in_(stats.MINUTE_NAMES), S.c.key >= stats.minute_key(now - 60 * max(windows)))))
    return stats.rates(rows, now, windows)


def latest_answers(connection: Connection, limit: int = 20, owner: Optional[int] = None) -> list[dict[str, Any]]:
    """The most recently stored answers, newest first; only the questions key ``owner`` asked, when given."""
    limit = max(1, min(limit, MAX_LATEST))
    query = (
        select(Q.c.question_id, Q.c.question_text, R.c.answer, R.c.bert_score, R.c.low_quality,
               R.c.processing_attempts, R.c.error_retries, R.c.total_processing_time_ms, R.c.model, R.c.updated_at)
        .select_from(R.join(Q, Q.c.question_id == R.c.question_id))
        # Both keys descending and both on responses: the plan reads the end of
        # ix_responses_updated_at_question_id backwards instead of sorting the table.
        .order_by(R.c.updated_at.desc(), R.c.question_id.desc()).limit(limit))
    if owner is not None:
        # A key's own questions come from the owners' primary key (key first); those are sorted, not the table.
        query = query.join(OWN, and_(OWN.c.question_id == R.c.question_id, OWN.c.key_id == owner))
    rows = connection.execute(query)
    return [{"question_id": r.question_id, "question_text": r.question_text, "answer": r.answer,
             "score": r.bert_score, "low_quality": bool(r.low_quality), "processing_attempts": r.processing_attempts,
             "error_retries": r.error_retries, "total_processing_time_ms": r.total_processing_time_ms,
             "model": r.model, "stored_at": to_seconds(r.updated_at)} for r in rows]
