"""Migration import on a real SQLite file: validation table, insert-if-absent, idempotence."""

import json

import pytest
from sqlalchemy import func, select

from qastream.datasets.jsonfile import read_objects
from qastream.datasets.records import BadRows
from qastream.db import queries, stats, totals
from qastream.db.imports import (
    Historical,
    InvalidRecord,
    import_batches,
    insert_absent,
    parse_historical,
    parse_timestamp,
    results_for,
    validated,
)
from qastream.db.queries import Q, R, Submission
from qastream.db.totals import S
from qastream.policy.ids import question_id

NOW = 1_700_000_000.0


def seed_record(n, **extra):
    record = {"question_text": f"What is thing {n}?", "original_answer": f"Thing {n} is a thing.",
              "llm_answer": f"A thing numbered {n}.", "bert_score": 0.8, "processing_attempts": 2,
              "total_processing_time_ms": 1500.0, "timestamp": "2024-05-01T10:00:00Z"}
    record.update(extra)
    return record


def parse(obj):
    return parse_historical(obj, max_chars=100, now=NOW)


def test_seed_field_names():
    h = parse(seed_record(1))
    assert h == Historical(question_id=question_id("What is thing 1?"), question_text="What is thing 1?",
                           original_answer="Thing 1 is a thing.", answer="A thing numbered 1.", score=0.8,
                           first_score=None, processing_attempts=2, error_retries=0, total_processing_time_ms=1500.0,
                           llm_time_ms=0.0, low_quality=False, model=None, at=1714557600.0)


def test_plain_field_names_and_defaults():
    h = parse({"question": "  What   is X? ", "answer": "X.", "score": "0.5", "attempts": 3.0, "timestamp": 1714557600000})
    assert (h.question_text, h.answer, h.score, h.processing_attempts, h.at) == ("What   is X?", "X.", 0.5, 3, 1714557600.0)
    assert h.question_id == question_id("What is X?")  # the id of the normalised text, as everywhere
    assert parse({"question": "q", "answer": "a"}).at == NOW  # no timestamp: the import time


@pytest.mark.parametrize("change, reason", [
    ({"question_text": None}, "no question_text"),
    ({"question_text": "   "}, "no question_text"),
    ({"question_text": 5}, "question_text is not a string"),
    ({"question_text": "x" * 101}, "question_text longer than 100 characters"),
    ({"llm_answer": None}, "no llm_answer"),
    ({"bert_score": "high"}, "bert_score is not a number"),
    ({"bert_score": True}, "bert_score is not a number"),
    ({"bert_score": 1.5}, "bert_score outside [-1, 1]"),
    ({"bert_score": float("nan")}, "bert_score is not a finite number"),
    ({"processing_attempts": 0}, "processing_attempts is not an integer >= 1"),
    ({"processing_attempts": 1.5}, "processing_attempts is not an integer >= 1"),
    ({"total_processing_time_ms": -1}, "processing time is negative"),
    ({"timestamp": "yesterday"}, "timestamp is not ISO 8601 or epoch seconds"),
    ({"timestamp": -5}, "timestamp is not a date"),
    ({"low_quality": "yes"}, "low_quality is not true or false"),
])
def test_invalid_records_say_why(change, reason):
    record = seed_record(1)
    record.update(change)
    with pytest.raises(InvalidRecord) as err:
        parse(record)
    assert str(err.value) == reason


def test_timestamps():
    assert parse_timestamp("2024-05-01T10:00:00") == parse_timestamp("2024-05-01T10:00:00+00:00") == 1714557600.0
    assert parse_timestamp("2024-05-01T12:00:00+02:00") == 1714557600.0


def count(engine, table):
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(table)).scalar()


def test_import_twice_imports_nothing_the_second_time(engine):
    records = [parse(seed_record(n)) for n in range(25)]
    first = list(import_batches(engine, records, batch_size=10))
    assert [len(b.imported) for b in first] == [10, 10, 5] and sum(b.duplicates for b in first) == 0
    second = list(import_batches(engine, records, batch_size=10))
    assert sum(len(b.imported) for b in second) == 0 and sum(b.duplicates for b in second) == 25
    assert count(engine, Q) == count(engine, R) == 25


def test_existing_questions_are_left_alone_and_repeats_in_a_batch_count_once(engine):
    with engine.begin() as c:
        queries.accept(c, [Submission(question_id("What is thing 1?"), "What is thing 1?", None, NOW)])
    records = [parse(seed_record(1)), parse(seed_record(2)), parse(seed_record(2, llm_answer="second copy"))]
    with engine.begin() as c:
        result = insert_absent(c, records)
    assert result.imported == [question_id("What is thing 2?")] and result.duplicates == 2
    with engine.connect() as c:
        assert c.execute(select(Q.c.status).where(Q.c.question_id == question_id("What is thing 1?"))).scalar() == \
            "pending"  # the pipeline's question is not overwritten
        assert c.execute(select(R.c.answer)).scalars().all() == ["A thing numbered 2."]


def test_each_batch_is_committed_before_it_is_reported(engine):
    batches = import_batches(engine, [parse(seed_record(n)) for n in range(3)], batch_size=2)
    first = next(batches)
    assert len(results_for(engine, first.imported)) == 2 == count(engine, R)  # visible to another connection
    assert len(next(batches).imported) == 1


def test_imported_rows_answer_like_the_pipeline(engine):
    h = parse(seed_record(3, low_quality=True, model="llama3.2", first_score=0.4))
    list(import_batches(engine, [h]))
    [cached] = results_for(engine, [h.question_id])
    with engine.connect() as c:
        row = queries.lookup(c, h.question_id)
    assert row["status"] == "completed" and row["result"] == cached
    assert cached["score"] == 0.8 and cached["low_quality"] is True and cached["processing_attempts"] == 2
    assert row["accepted_at"] == pytest.approx(1714557600.0 - 1.5)  # completed at the timestamp, took 1.5 s


def test_file_to_database_counts_invalid_by_reason(engine, tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text("\n".join([json.dumps(seed_record(1)), "{broken", json.dumps(seed_record(2, bert_score=7)),
                               json.dumps(seed_record(1))]) + "\n")
    bad = BadRows()
    batches = list(import_batches(engine, validated(read_objects(path, bad), bad, max_chars=100, now=NOW)))
    assert sum(len(b.imported) for b in batches) == 1 and sum(b.duplicates for b in batches) == 1
    assert bad.as_dict() == {"invalid JSON line": 1, "bert_score outside [-1, 1]": 1}


def test_only_answers_of_the_last_minutes_add_throughput_counters(engine):
    """Old answers count in every total but in no per-minute counter: those cover KEEP_MINUTES only, and
    adding a row per old minute that the prune deletes at once bloated PostgreSQL's stats table."""
    at = parse(seed_record(1)).at
    records = [parse(seed_record(1)), parse(seed_record(2, timestamp=at + 14 * 60))]  # 6 min before now: recent
    with engine.begin() as c:
        insert_absent(c, records, now=at + 20 * 60)
    with engine.connect() as c:
        minutes = c.execute(select(S.c.name, S.c.key, S.c.n).where(S.c.name.in_(stats.MINUTE_NAMES))).all()
        assert totals.read(c)["total_responses"] == 2
    accepted, completed = at + 14 * 60 - 1.5, at + 14 * 60  # total_processing_time_ms is 1500
    assert sorted(minutes) == [(stats.ACCEPTED, stats.minute_key(accepted), 1),
                               (stats.COMPLETED, stats.minute_key(completed), 1)]
