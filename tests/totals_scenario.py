"""A mixed sequence of writes and a full scan to check the running totals against, on any database.

Shared by tests/unit/test_running_totals.py (SQLite) and
tests/integration/test_running_totals_postgres.py: the totals must not depend on the dialect.
"""

from collections import Counter

from sqlalchemy import select

from qastream.db import batches, imports, queries
from qastream.db.batches import B, Item, NewBatch
from qastream.db.imports import Historical
from qastream.db.queries import Failure, Q, R, StoredAnswer, Submission
from qastream.policy.batches import BatchStatus
from qastream.policy.lifecycle import State
from qastream.policy.usage import Usage
from qastream.telemetry.stats import nearest_rank_index

T0 = 1_700_000_000.0


def qid(n):
    return f"{n:016x}"


def answer(n, *, epoch=1, score=0.8, attempts=1, retries=0, total_ms=1000.0, low_quality=False, at=T0 + 5):
    # Token counts that differ with the attempts, so a rewritten answer must uncount the old ones.
    usage = Usage(prompt_tokens=20 * attempts + n, eval_tokens=50 * attempts, eval_ms=100.0 * attempts + 0.1 * n,
                  load_ms=1.0, wasted_tokens=70 * (attempts - 1), first_model="m")
    return StoredAnswer(question_id=qid(n), question_text=f"question {n}", original_answer="ref", accepted_at=T0,
                        epoch=epoch, answer=f"answer {n}", score=score, first_score=score,
                        processing_attempts=attempts, error_retries=retries, total_processing_time_ms=total_ms,
                        llm_time_ms=10.0, low_quality=low_quality, model="m", at=at, usage=usage)


def failure(n, error_class, *, epoch=1, at=T0 + 6):
    return Failure(qid(n), f"question {n}", None, T0, epoch, error_class, "it failed", at)


def historical(n, score, at=T0 - 3600):
    return Historical(question_id=qid(n), question_text=f"question {n}", original_answer="ref", answer="old",
                      score=score, first_score=score, processing_attempts=2, error_retries=1,
                      total_processing_time_ms=250.0, llm_time_ms=5.0, low_quality=False, model="m", at=at)


def mixed_sequence(engine):
    """Every kind of write, with redeliveries, stale epochs and replays; each step its own transaction."""
    steps = [
        lambda c: queries.accept(c, [Submission(qid(n), f"question {n}", None, T0) for n in range(1, 8)]),
        lambda c: queries.accept(c, [Submission(qid(1), "question 1", "ref", T0 + 1)]),  # in flight: nothing new
        lambda c: queries.save_completed(c, [answer(1, score=0.25, retries=2),
                                             answer(2, score=None, attempts=2, total_ms=40.0),
                                             answer(3, score=0.1, attempts=3, low_quality=True, total_ms=9000.0)]),
        lambda c: queries.save_completed(c, [answer(1, score=0.25, retries=2)]),       # redelivered
        lambda c: queries.save_completed(c, [answer(2, score=0.95, attempts=3, retries=1, total_ms=80.0)]),  # rewritten
        lambda c: queries.save_failed(c, [failure(4, "overload"), failure(5, "permanent"), failure(6, "quota")]),
        lambda c: queries.save_failed(c, [failure(4, "quota")]),                       # redelivered, new class
        lambda c: queries.save_failed(c, [failure(1, "permanent")]),                   # superseded by the answer
        lambda c: queries.accept(c, [Submission(qid(4), "question 4", None, T0 + 20)]),  # resubmitted: epoch 2
        lambda c: queries.save_failed(c, [failure(4, "overload")]),                    # stale epoch 1
        lambda c: queries.save_completed(c, [answer(4, score=0.5)]),                   # stale epoch 1
        lambda c: queries.save_completed(c, [answer(4, epoch=2, score=0.55, total_ms=3000.0, at=T0 + 30)]),
        lambda c: queries.resubmit(c, T0 + 40, statuses=[State.FAILED], question_ids=[qid(5)]),
        lambda c: queries.resubmit(c, T0 + 41, statuses=[State.PENDING], question_ids=[qid(7)]),
        lambda c: queries.save_completed(c, [answer(20, score=0.7)]),                  # never accepted
        lambda c: queries.save_failed(c, [failure(21, "overload")]),                   # never accepted
        lambda c: imports.insert_absent(c, [historical(1, 0.3), historical(30, 0.45), historical(31, None)]),
        lambda c: queries.save_completed(c, [answer(30, score=0.6)]),                  # an imported answer replaced
        # batches: one cancelled while a question is in flight, whose answer then arrives; one that completes
        lambda c: batches.create_within(c, NewBatch("batch_a", 3, T0 + 50, None, None, None), 3, None),
        lambda c: batches.accept_items(c, "batch_a", [Item(n - 39, None, Submission(qid(n), f"question {n}", None,
                                                                                    T0 + 50)) for n in (40, 41, 1)]),
        lambda c: batches.cancel(c, "batch_a", T0 + 51),
        lambda c: batches.cancel(c, "batch_a", T0 + 52),                                 # a second cancel: nothing
        lambda c: queries.save_completed(c, [answer(41, at=T0 + 53)]),                   # was in flight: stored
        lambda c: queries.save_failed(c, [failure(40, "overload", at=T0 + 53)]),         # cancelled stays cancelled
        lambda c: batches.finish(c, batches.get(c, "batch_a"), BatchStatus.CANCELLED, T0 + 54),
        lambda c: batches.finish(c, batches.get(c, "batch_a"), BatchStatus.CANCELLED, T0 + 55),  # read again: moved
        lambda c: batches.create_within(c, NewBatch("batch_b", 1, T0 + 60, None, None, None), 1, None),
        lambda c: batches.accept_items(c, "batch_b", [Item(1, "x", Submission(qid(40), "question 40", None,
                                                                              T0 + 60))]),  # cancelled: asked again
    ]
    for step in steps:
        with engine.begin() as connection:
            step(connection)


def scanned(connection):
    """The database fields of /metrics computed from every row, as /metrics did before the running totals."""
    questions = connection.execute(select(Q.c.status, Q.c.error_class)).all()
    responses = connection.execute(select(R)).all()
    scores = [r.bert_score for r in responses if r.bert_score is not None]
    by_status, by_class, attempts = {}, {}, {}
    for q in questions:
        by_status[q.status] = by_status.get(q.status, 0) + 1
        if q.status == State.FAILED:
            by_class[q.error_class or "unknown"] = by_class.get(q.error_class or "unknown", 0) + 1
    for r in responses:
        attempts[str(r.processing_attempts)] = attempts.get(str(r.processing_attempts), 0) + 1
    buckets = [0] * 10
    for s in scores:
        buckets[min(9, int(s * 10 + 1e-9))] += 1
    times = sorted(r.total_processing_time_ms for r in responses)
    prompt, generated = sum(r.prompt_tokens for r in responses), sum(r.eval_tokens for r in responses)
    eval_ms = sum(r.eval_ms for r in responses)
    return {
        "total_responses": len(responses),
        "scored_responses": len(scores),
        "average_score": round(sum(scores) / len(scores), 4) if scores else None,
        "low_quality_responses": sum(1 for r in responses if r.low_quality),
        "attempts_distribution": dict(sorted(attempts.items(), key=lambda kv: int(kv[0]))),
        "score_distribution": buckets,
        "questions_by_status": by_status,
        "batches_by_status": dict(Counter(connection.execute(select(B.c.status)).scalars())),
        "dead_letters": sum(by_class.values()),
        "dead_letters_by_class": by_class,
        "error_retries_of_completed": sum(r.error_retries for r in responses),
        "processing_time_ms": {f"p{p}": times[nearest_rank_index(len(times), p)] if times else None
                               for p in (50, 95, 99)},
        "tokens": {"prompt_tokens": prompt, "eval_tokens": generated,
                   "wasted_tokens": sum(r.wasted_tokens for r in responses),
                   "tokens_per_answer": round((prompt + generated) / len(responses), 1) if responses else None,
                   "eval_tokens_per_second": round(generated / (eval_ms / 1000.0), 2) if eval_ms > 0 else None},
    }
