"""qastream.db.recent: throughput windows and the latest answers, on SQLite."""


from qastream.db import queries, recent
from qastream.db.queries import Failure, StoredAnswer, Submission

NOW = 1_700_000_000.0


def run(engine, fn, *args, **kwargs):
    with engine.begin() as connection:
        return fn(connection, *args, **kwargs)


def qid(n):
    return f"{n:016x}"


def answer(n, at, score=0.8, low_quality=False):
    return StoredAnswer(question_id=qid(n), question_text=f"question {n}", original_answer="ref", accepted_at=at - 2,
                        epoch=1, answer=f"answer {n}", score=score, first_score=score, processing_attempts=1,
                        error_retries=0, total_processing_time_ms=2000.0, llm_time_ms=10.0,
                        low_quality=low_quality, model="smollm2", at=at)


def test_throughput_counts_per_minute_in_each_window(engine):
    # Accepted 10 s, 2 min and 10 min ago; completed 30 s and 4 min ago; one failed 20 s ago.
    run(engine, queries.accept, [Submission(qid(n), f"question {n}", None, NOW - ago)
                                 for n, ago in ((1, 10), (2, 120), (3, 600), (4, 20))])
    run(engine, queries.save_completed, [answer(1, NOW - 30), answer(2, NOW - 240)])
    run(engine, queries.save_failed, [Failure(qid(4), "question 4", None, NOW - 20, 1, "permanent", "404", NOW - 20)])
    assert run(engine, recent.throughput, NOW) == {
        "accepted_per_minute": {"1m": 2.0, "5m": 0.6},
        "completed_per_minute": {"1m": 1.0, "5m": 0.4},
        "failed_per_minute": {"1m": 1.0, "5m": 0.2},
    }


def test_a_rewritten_answer_is_counted_once(engine):
    run(engine, queries.save_completed, [answer(1, NOW - 30)])
    run(engine, queries.save_completed, [answer(1, NOW - 10, score=0.9)])
    assert run(engine, recent.throughput, NOW)["completed_per_minute"] == {"1m": 1.0, "5m": 0.2}


def test_latest_answers_newest_first_and_bounded(engine):
    run(engine, queries.save_completed, [answer(n, NOW - 100 + n, low_quality=n == 2) for n in range(5)])
    latest = run(engine, recent.latest_answers, 3)
    assert [a["question_id"] for a in latest] == [qid(4), qid(3), qid(2)]
    assert latest[2]["low_quality"] is True
    assert latest[0] == {"question_id": qid(4), "question_text": "question 4", "answer": "answer 4", "score": 0.8,
                         "low_quality": False, "processing_attempts": 1, "error_retries": 0,
                         "total_processing_time_ms": 2000.0, "model": "smollm2", "stored_at": NOW - 96}
    assert len(run(engine, recent.latest_answers, 10_000)) == 5


def test_latest_answers_of_an_empty_database(engine):
    assert run(engine, recent.latest_answers, 20) == []
