"""qastream.policy.quality: the quality gate and the best-answer bookkeeping across attempts."""

import pytest

from qastream.models import Job
from qastream.policy.quality import Verdict, after_scoring, better, judge, keep_best

THRESHOLD = 0.6
MAX_ATTEMPTS = 3


@pytest.mark.parametrize("score, attempt, max_attempts, verdict", [
    (0.9, 1, 3, Verdict.ACCEPT),
    (0.6, 1, 3, Verdict.ACCEPT),          # equal to the threshold passes
    (0.6, 3, 3, Verdict.ACCEPT),
    (0.5999, 1, 3, Verdict.REGENERATE),
    (0.1, 2, 3, Verdict.REGENERATE),
    (0.5999, 3, 3, Verdict.ACCEPT_LOW),   # last attempt keeps the best
    (0.1, 4, 3, Verdict.ACCEPT_LOW),      # past the last attempt too
    (0.1, 1, 1, Verdict.ACCEPT_LOW),      # a single attempt allowed
    (None, 1, 3, Verdict.ACCEPT),         # nothing to score against
    (None, 3, 3, Verdict.ACCEPT),
    (-0.2, 1, 3, Verdict.REGENERATE),
])
def test_judge(score, attempt, max_attempts, verdict):
    assert judge(score, THRESHOLD, attempt, max_attempts) is verdict


@pytest.mark.parametrize("score, best, expected", [
    (0.5, None, True),
    (0.5, 0.4, True),
    (0.5, 0.5, False),   # a tie keeps the earlier answer
    (0.4, 0.5, False),
    (None, None, False),
    (None, 0.5, False),
    (-0.1, None, True),
])
def test_better(score, best, expected):
    assert better(score, best) is expected


def job(**fields):
    return Job(question_id="0123456789abcdef", question_text="What is Kafka?", original_answer="A log.", **fields)


def test_first_attempt_that_passes_is_accepted():
    verdict, out = after_scoring(job(answer="a1"), 0.8, THRESHOLD, MAX_ATTEMPTS)
    assert verdict is Verdict.ACCEPT
    assert (out.answer, out.score, out.first_score) == ("a1", 0.8, 0.8)
    assert (out.best_answer, out.best_score, out.best_attempt) == ("a1", 0.8, 1)
    assert out.low_quality is False


def test_first_attempt_below_threshold_regenerates_and_remembers_it():
    verdict, out = after_scoring(job(answer="a1"), 0.3, THRESHOLD, MAX_ATTEMPTS)
    assert verdict is Verdict.REGENERATE
    assert (out.best_answer, out.best_score, out.best_attempt, out.first_score) == ("a1", 0.3, 1, 0.3)


def test_unscored_answer_is_accepted_as_is():
    verdict, out = after_scoring(job(answer="a1"), None, THRESHOLD, MAX_ATTEMPTS)
    assert verdict is Verdict.ACCEPT
    assert (out.answer, out.score, out.first_score, out.low_quality) == ("a1", None, None, False)


def run_attempts(answers_and_scores, max_attempts=MAX_ATTEMPTS):
    """Feed each (answer, score) as the next attempt, the way validate/regenerate do."""
    current = job()
    verdicts = []
    for attempt, (answer, score) in enumerate(answers_and_scores, start=1):
        current = current.derive(attempt=attempt, answer=answer, score=None)
        verdict, current = after_scoring(current, score, THRESHOLD, max_attempts)
        verdicts.append(verdict)
    return verdicts, current


@pytest.mark.parametrize("attempts, verdicts, kept", [
    # answer, score, first_score, best_attempt, low_quality of the job that goes on
    ([("a1", 0.5), ("a2", 0.4), ("a3", 0.3)],
     [Verdict.REGENERATE, Verdict.REGENERATE, Verdict.ACCEPT_LOW], ("a1", 0.5, 0.5, 1, True)),
    ([("a1", 0.3), ("a2", 0.55), ("a3", 0.2)],
     [Verdict.REGENERATE, Verdict.REGENERATE, Verdict.ACCEPT_LOW], ("a2", 0.55, 0.3, 2, True)),
    ([("a1", 0.3), ("a2", 0.4), ("a3", 0.5)],
     [Verdict.REGENERATE, Verdict.REGENERATE, Verdict.ACCEPT_LOW], ("a3", 0.5, 0.3, 3, True)),
    ([("a1", 0.5), ("a2", 0.5), ("a3", 0.5)],       # ties keep the earliest
     [Verdict.REGENERATE, Verdict.REGENERATE, Verdict.ACCEPT_LOW], ("a1", 0.5, 0.5, 1, True)),
    ([("a1", 0.5), ("a2", 0.7)],
     [Verdict.REGENERATE, Verdict.ACCEPT], ("a2", 0.7, 0.5, 2, False)),
    ([("a1", 0.5), ("a2", 0.4), ("a3", 0.6)],       # last attempt passes at the threshold
     [Verdict.REGENERATE, Verdict.REGENERATE, Verdict.ACCEPT], ("a3", 0.6, 0.5, 3, False)),
])
def test_best_answer_is_kept_across_attempts(attempts, verdicts, kept):
    got_verdicts, out = run_attempts(attempts)
    assert got_verdicts == verdicts
    assert (out.answer, out.score, out.first_score, out.best_attempt, out.low_quality) == kept
    assert out.attempt == len(attempts)  # the job still says how many generations it took


def test_accept_low_stores_best_not_last():
    _, out = run_attempts([("good-ish", 0.59), ("bad", 0.1), ("worse", 0.05)])
    assert out.answer == "good-ish"
    assert out.score == 0.59
    assert out.best_answer == "good-ish"
    assert out.low_quality is True


def test_after_scoring_does_not_mutate_its_input():
    original = job(answer="a1")
    after_scoring(original, 0.1, THRESHOLD, 1)
    assert (original.score, original.low_quality, original.best_answer) == (None, False, None)


@pytest.mark.parametrize("models, scores, kept_model", [
    (["small", "big", "big"], [0.5, 0.3, 0.2], "small"),   # the best was the first model's: it is credited
    (["small", "big", "big"], [0.2, 0.5, 0.3], "big"),
    (["small", "big"], [0.2, 0.7], "big"),                 # passed after escalating
    (["small"], [0.9], "small"),
])
def test_the_kept_answer_keeps_the_model_that_wrote_it(models, scores, kept_model):
    current = job()
    for attempt, (model, score) in enumerate(zip(models, scores), start=1):
        current = current.derive(attempt=attempt, answer=f"a{attempt}", model=model, score=None)
        _, current = after_scoring(current, score, THRESHOLD, MAX_ATTEMPTS)
    assert current.model == kept_model


def test_a_cancelled_regeneration_keeps_the_best_answers_model():
    regenerating = job(attempt=3, model="big", best_answer="a1", best_score=0.5, best_attempt=1, best_model="small")
    assert keep_best(regenerating).model == "small"
    assert keep_best(job(attempt=2, model="small", best_answer="a1", best_score=0.5)).model == "small"  # older job


def test_old_messages_decode_without_the_new_fields():
    old = Job.loads(b'{"question_id": "0123456789abcdef", "question_text": "Q?", "attempt": 2}')
    assert (old.last_server, old.best_model) == (None, None)
