"""The quality report on a SQLite file written through the store stage's own query."""

import pytest

from qastream.db import queries
from qastream.db.report import quality_report, render_report
from qastream.policy.usage import Usage

T0 = 1_700_000_000.0
NOTHING = Usage()  # an answer stored before token accounting


def answer(n, score, first_score, attempts, low_quality=False, total_ms=1000.0, model="m", usage=NOTHING):
    return queries.StoredAnswer(
        question_id=f"{n:016x}", question_text=f"q{n}", original_answer="ref", accepted_at=T0, epoch=1,
        answer="a", score=score, first_score=first_score, processing_attempts=attempts, error_retries=0,
        total_processing_time_ms=total_ms, llm_time_ms=10.0, low_quality=low_quality, model=model, at=T0 + 1,
        usage=usage)


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


def spent(prompt, generated, eval_ms, wasted=0, first_model="small"):
    return Usage(prompt_tokens=prompt, eval_tokens=generated, eval_ms=eval_ms, wasted_tokens=wasted,
                 first_model=first_model)


def test_tokens_per_model_and_the_gain_from_escalation(engine):
    report = report_of(engine, [
        answer(1, 0.9, 0.9, 1, model="small", usage=spent(20, 80, 1000.0)),             # passed at once
        answer(2, 0.2, 0.2, 1, model="small", total_ms=3000.0, usage=spent(20, 60, 600.0)),  # below, 1 attempt
        answer(3, 0.8, 0.1, 2, model="large", usage=spent(50, 150, 3000.0, wasted=90)),  # escalated, passed
        answer(4, 0.4, 0.1, 3, low_quality=True, model="large",                          # escalated, still low
               usage=spent(80, 220, 4000.0, wasted=200)),
        answer(5, 0.7, 0.2, 2, model="small", usage=spent(40, 160, 2000.0, wasted=100)),  # same model: no escalation
        answer(6, 0.7, 0.7, 1, model="m"),                                               # stored before 0007
    ])
    tokens = report["tokens"]
    assert (tokens["prompt_tokens"], tokens["eval_tokens"], tokens["wasted_tokens"]) == (210, 670, 390)
    assert tokens["tokens_per_kept_answer"] == 176.0       # 880 tokens over the 5 answers that carry counts
    assert tokens["wasted_share"] == round(390 / 880, 4)
    by_model = {m["model"]: m for m in tokens["by_model"]}
    assert list(by_model) == ["large", "m", "small"]
    small, large = by_model["small"], by_model["large"]
    assert (small["answers"], small["pass_rate"], small["average_score"]) == (3, round(2 / 3, 4), 0.6)
    assert small["average_latency_ms"] == round(5000 / 3, 1) and small["average_llm_ms"] == 10.0
    assert small["tokens_per_kept_answer"] == round(380 / 3, 1)
    assert small["eval_tokens_per_second"] == 83.33    # 300 tokens in 3.6 s
    assert (large["answers"], large["pass_rate"], large["tokens_per_kept_answer"]) == (2, 0.5, 250.0)
    assert by_model["m"]["tokens_per_kept_answer"] is None and by_model["m"]["eval_tokens_per_second"] is None
    assert tokens["escalation"] == {"escalated": 2, "passed_after_escalation": 1}
    text = "\n".join(render_report(report))
    assert "wasted on rejected attempts" in text and "passed only after escalating" in text
    assert any(line.split()[:2] == ["large", "2"] for line in text.splitlines())


def test_tokens_of_an_empty_database(engine):
    tokens = report_of(engine, [])["tokens"]
    assert tokens == {"prompt_tokens": 0, "eval_tokens": 0, "wasted_tokens": 0, "tokens_per_kept_answer": None,
                      "wasted_share": None, "by_model": [],
                      "escalation": {"escalated": 0, "passed_after_escalation": 0}}
