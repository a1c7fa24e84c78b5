"""Token accounting: sums per question, the tokens of rejected attempts, and the worker's totals by model and server."""

import json

import pytest

from qastream.models import Job, result_of
from qastream.policy.quality import Verdict, after_scoring, keep_best
from qastream.policy.usage import Usage, after_generation, usage_of
from qastream.services.llm import Generation
from qastream.telemetry.tokens import TokenCounts
from qastream.web.prometheus import token_families

THRESHOLD, MAX_ATTEMPTS = 0.5, 3


def gen(prompt, generated, model="small", *, eval_ms=100.0, load_ms=0.0, server="http://a:11434"):
    return Generation("an answer", model, 1.0, generated, prompt_tokens=prompt, eval_ns=int(eval_ms * 1e6),
                      load_ns=int(load_ms * 1e6), total_ns=int((eval_ms + load_ms) * 1e6), server=server)


def answered(job, generation):
    return job.derive(answer=f"answer {job.attempt}", model=generation.model, **after_generation(job, generation))


def regenerated(job):
    return job.derive(attempt=job.attempt + 1, answer=None, score=None)


def job():
    return Job(question_id="0123456789abcdef", question_text="What is a compiler?", original_answer="ref")


def run(attempts):
    """Attempts as (prompt, generated, model, score); the job after each attempt's quality gate."""
    current, verdict = job(), None
    for n, (prompt, generated, model, score) in enumerate(attempts):
        if n:
            current = regenerated(current)
        current = answered(current, gen(prompt, generated, model))
        verdict, current = after_scoring(current, score, THRESHOLD, MAX_ATTEMPTS)
    return verdict, current


def test_a_generation_adds_its_counts_and_durations():
    first = answered(job(), gen(20, 50, eval_ms=250.0, load_ms=300.0))
    assert (first.prompt_tokens, first.eval_tokens, first.attempt_tokens) == (20, 50, 70)
    assert (first.eval_ms, first.load_ms, first.first_model) == (pytest.approx(250.0), pytest.approx(300.0), "small")
    second = answered(regenerated(first), gen(25, 40, "large", eval_ms=400.0))
    assert (second.prompt_tokens, second.eval_tokens, second.attempt_tokens) == (45, 90, 65)
    assert second.eval_ms == pytest.approx(650.0) and second.load_ms == pytest.approx(300.0)
    assert second.first_model == "small" and second.model == "large"


@pytest.mark.parametrize("attempts, verdict, wasted, kept_answer", [
    # passed at once: nothing wasted
    ([(20, 50, "small", 0.9)], Verdict.ACCEPT, 0, "answer 1"),
    # unscored (no reference): accepted, nothing wasted
    ([(20, 50, "small", None)], Verdict.ACCEPT, 0, "answer 1"),
    # attempt 1 rejected, attempt 2 passes: attempt 1's 70 tokens wasted
    ([(20, 50, "small", 0.2), (25, 40, "large", 0.8)], Verdict.ACCEPT, 70, "answer 2"),
    # out of attempts: the best (attempt 2, 65 tokens) is kept, attempts 1 and 3 wasted
    ([(20, 50, "small", 0.2), (25, 40, "small", 0.4), (22, 60, "small", 0.3)], Verdict.ACCEPT_LOW, 70 + 82,
     "answer 2"),
    # out of attempts, the last is the best: the two before it wasted
    ([(20, 50, "small", 0.1), (25, 40, "small", 0.2), (22, 60, "small", 0.3)], Verdict.ACCEPT_LOW, 70 + 65,
     "answer 3"),
])
def test_wasted_tokens_are_those_of_the_attempts_not_kept(attempts, verdict, wasted, kept_answer):
    got, final = run(attempts)
    assert got is verdict and final.answer == kept_answer
    assert final.wasted_tokens == wasted
    assert final.prompt_tokens + final.eval_tokens == sum(p + g for p, g, _, _ in attempts)


def test_a_question_cancelled_between_attempts_keeps_the_best_and_wastes_the_rest():
    verdict, scored = run([(20, 50, "small", 0.3), (25, 40, "large", 0.1)])
    assert verdict is Verdict.REGENERATE
    ended = keep_best(regenerated(scored))
    assert ended.answer == "answer 1" and ended.wasted_tokens == 65
    assert ended.model == "small"   # the kept answer's model, not the last attempt's


@pytest.mark.parametrize("scores, kept_model", [
    ((0.3, 0.1, 0.2), "small"),     # attempt 1 is the best: kept with its model
    ((0.1, 0.3, 0.2), "large"),
    ((0.1, 0.2, 0.8), "huge"),      # attempt 3 passes
])
def test_the_kept_answer_keeps_the_model_that_wrote_it(scores, kept_model):
    models = ("small", "large", "huge")
    _, final = run([(20, 50, model, score) for model, score in zip(models, scores)])
    assert final.model == kept_model and final.first_model == "small"


def test_a_message_from_before_token_accounting_decodes_with_nothing_counted():
    old = {"question_id": "0123456789abcdef", "question_text": "q", "attempt": 2, "answer": "a", "model": "m"}
    decoded = Job.loads(json.dumps(old).encode())
    assert usage_of(decoded) == Usage()
    # Its next generation counts from there; attempt 1's model is unknown and stays so.
    later = answered(decoded, gen(10, 20))
    assert (later.prompt_tokens, later.eval_tokens, later.first_model) == (10, 20, None)
    assert after_scoring(later, 0.1, THRESHOLD, MAX_ATTEMPTS)[1].wasted_tokens == 0


def test_a_result_shows_the_usage():
    _, final = run([(20, 50, "small", 0.2), (25, 40, "large", 0.8)])
    assert result_of(final, 10.0)["usage"] == {"prompt_tokens": 45, "eval_tokens": 90, "eval_ms": 200.0,
                                               "load_ms": 0.0, "wasted_tokens": 70, "first_model": "small"}


def test_worker_totals_by_model_and_server_give_tokens_per_second():
    counts = TokenCounts()
    counts.record(gen(20, 50, eval_ms=500.0, load_ms=300.0))
    counts.record(gen(10, 30, eval_ms=300.0))
    counts.record(gen(5, 40, "large", eval_ms=2000.0, server="http://b:11434"))
    assert counts.snapshot() == [
        {"model": "large", "server": "http://b:11434", "calls": 1, "prompt_tokens": 5, "eval_tokens": 40,
         "eval_seconds": 2.0, "load_seconds": 0.0, "eval_tokens_per_second": 20.0},
        {"model": "small", "server": "http://a:11434", "calls": 2, "prompt_tokens": 30, "eval_tokens": 80,
         "eval_seconds": 0.8, "load_seconds": 0.3, "eval_tokens_per_second": 100.0},
    ]
    assert TokenCounts().snapshot() == []


def test_a_server_that_reports_no_duration_has_no_rate():
    counts = TokenCounts()
    counts.record(gen(20, 50, eval_ms=0.0))
    assert counts.snapshot()[0]["eval_tokens_per_second"] is None


def test_prometheus_counters_by_model_and_server():
    counts = TokenCounts()
    counts.record(gen(20, 50, eval_ms=500.0))
    snapshot = {"llm_tokens": counts.snapshot(),
                "tokens": {"prompt_tokens": 20, "eval_tokens": 50, "wasted_tokens": 7}}
    found = {family.name: (family.type, [(s.labels, s.value) for s in family.samples])
             for family in token_families(snapshot)}
    source = {"model": "small", "server": "http://a:11434"}
    assert found["qastream_llm_prompt_tokens"] == ("counter", [(source, 20.0)])
    assert found["qastream_llm_eval_tokens"] == ("counter", [(source, 50.0)])
    assert found["qastream_llm_eval_seconds"] == ("counter", [(source, 0.5)])
    assert found["qastream_llm_load_seconds"] == ("counter", [(source, 0.0)])
    assert found["qastream_db_tokens"][1] == [({"kind": "prompt"}, 20.0), ({"kind": "eval"}, 50.0),
                                              ({"kind": "wasted"}, 7.0)]
