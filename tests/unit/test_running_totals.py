"""The running totals behind /metrics equal a full scan, and /metrics reads only them, on SQLite."""

import pytest
from sqlalchemy import event
from totals_scenario import T0, answer, mixed_sequence, qid, scanned

from qastream.db import queries, recent, stats, totals
from qastream.db.queries import Submission

#: Percentiles come from histogram buckets 2**(1/8) wide, reported at their geometric middle.
PRECISION = 2 ** (1 / 16) - 1


def assert_totals_match_a_scan(engine):
    with engine.connect() as connection:
        kept, scan = totals.read(connection), scanned(connection)
    assert list(kept.pop("score_distribution").values()) == scan.pop("score_distribution")
    assert kept.pop("processing_time_ms") == pytest.approx(scan.pop("processing_time_ms"), rel=PRECISION)
    assert kept.pop("tokens") == pytest.approx(scan.pop("tokens"))  # generation ms: a float sum, added and taken
    assert kept == scan


def test_the_totals_equal_a_full_scan_after_a_mixed_sequence(engine):
    mixed_sequence(engine)
    assert_totals_match_a_scan(engine)
    with engine.connect() as connection:
        m = totals.read(connection)
    # The sequence is meant to leave every kind of figure non-trivial.
    assert m["questions_by_status"] == {"completed": 8, "failed": 2, "pending": 3}
    assert m["batches_by_status"] == {"cancelled": 1, "in_progress": 1}
    assert m["dead_letters_by_class"] == {"quota": 1, "overload": 1}
    assert m["total_responses"] == 8 and m["scored_responses"] == 7
    assert m["tokens"]["eval_tokens"] > 0 and m["tokens"]["wasted_tokens"] > 0


def test_a_redelivered_answer_counts_once_per_minute(engine):
    with engine.begin() as connection:
        queries.save_completed(connection, [answer(1, at=T0)])
    with engine.begin() as connection:
        queries.save_completed(connection, [answer(1, at=T0 + 1)])
    with engine.connect() as connection:
        assert recent.throughput(connection, T0 + 2)["completed_per_minute"] == {"1m": 1.0, "5m": 0.2}


def test_old_minute_counters_are_pruned(engine):
    with engine.begin() as connection:
        queries.accept(connection, [Submission(qid(1), "q", None, T0)])
        queries.accept(connection, [Submission(qid(2), "q", None, T0 + 60 * (stats.KEEP_MINUTES + 1))])
        minutes = connection.execute(totals.S.select().where(totals.S.c.name == stats.ACCEPTED)).all()
    assert [m.key for m in minutes] == [stats.minute_key(T0 + 60 * (stats.KEEP_MINUTES + 1))]


def statements_of(engine, call):
    seen = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as connection:
            call(connection)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


@pytest.mark.parametrize("function", [totals.read, lambda c: recent.throughput(c, T0 + 10)])
def test_metrics_reads_the_same_bounded_statements_at_10_and_2000_answers(engine, function):
    counts = []
    for start, end in ((0, 10), (10, 2000)):
        with engine.begin() as connection:
            queries.accept(connection, [Submission(qid(n), f"q{n}", None, T0) for n in range(start, end)])
            queries.save_completed(connection, [answer(n, score=(n % 10) / 10, total_ms=float(n + 1))
                                                for n in range(start, end)])
        statements = statements_of(engine, function)
        assert all(" stats" in s and "questions" not in s and "responses" not in s for s in statements), statements
        counts.append(len(statements))
    assert counts == [1, 1]
