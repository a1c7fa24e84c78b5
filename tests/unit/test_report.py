"""The quality report on a SQLite file written through the store stage's own query."""

import pytest

from qastream.db import queries
from qastream.db.report import quality_report, render_report

T0 = 1_700_000_000.0


def answer(n, score, first_score, attempts, low_quality=False, total_ms=1000.0):
    return queries.StoredAnswer(
        question_id=f"{n:016x}", question_text=f"q{n}", original_answer="ref", accepted_at=T0, epoch=1,
        answer="a", score=score, first_score=first_score, processing_attempts=attempts, error_retries=0,
        total_processing_time_ms=total_ms, llm_time_ms=10.0, low_quality=low_quality, model="m", at=T0 + 1)


def report_of(engine, answers, threshold=0.5):
    with engine.begin() as c:
        queries.save_completed(c, answers)
    with engine.connect() as c:
        return quality_report(c, threshold)


def test_empty_database(engine):
    report = report_of(engine, [])
    assert report["total_responses"] == 0 and report["average_score"] is None
    assert report["attempts_distribution"] == {"1": 0, "2": 0, "3": 0}
    assert report["share_below_threshold"] is None and report["regeneration"]["average_gain"] is None
    assert render_report(report)  # renders without figures


def test_figures(engine):
    report = report_of(engine, [
        answer(1, 0.9, 0.9, 1),                        # passed first time
        answer(2, 0.6, 0.3, 2, total_ms=3000.0),       # regenerated, rescued
        answer(3, 0.45, 0.2, 3, low_quality=True),     # regenerated, still below: kept best, flagged
        answer(4, 0.4, 0.4, 1),                        # below at attempt 1 (a run with max_attempts 1)
        answer(5, 1.0, 1.0, 1),                        # top bucket edge
        answer(6, None, None, 1),                      # unscored (no reference)
    ])
    assert report["total_responses"] == 6 and report["scored_responses"] == 5
    assert report["average_score"] == pytest.approx((0.9 + 0.6 + 0.45 + 0.4 + 1.0) / 5)
    assert report["attempts_distribution"] == {"1": 4, "2": 1, "3": 1}
    assert report["attempts_share"]["1"] == pytest.approx(4 / 6, abs=1e-4)
    buckets = report["score_buckets"]
    assert (buckets["0.4-0.5"], buckets["0.6-0.7"], buckets["0.9-1.0"]) == (2, 1, 2) and sum(buckets.values()) == 5
    assert report["below_threshold"] == 2 and report["share_below_threshold"] == 0.4
    assert report["passed_first_attempt"] == 2 and report["low_quality"] == 1
    regen = report["regeneration"]
    assert regen["regenerated"] == 2 and regen["improved"] == 2 and regen["passed_after_regeneration"] == 1
    assert regen["average_first_score"] == pytest.approx(0.25) and regen["average_gain"] == pytest.approx(0.275)
    assert report["questions_by_status"] == {"completed": 6}
    assert report["processing_time_ms"]["p99"] == 3000.0
    text = "\n".join(render_report(report))
    assert "below threshold 0.50" in text and "average gain" in text


def test_threshold_moves_the_share_below(engine):
    report = report_of(engine, [answer(1, 0.35, 0.35, 1), answer(2, 0.31, 0.31, 1)], threshold=0.33)
    assert report["below_threshold"] == 1
