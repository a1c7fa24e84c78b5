"""The quality gate: keep, regenerate, or keep the best as low quality.

A pure decision so the policy is table-tested without a broker or a model.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Optional

from qastream.policy.usage import wasted

if TYPE_CHECKING:
    from qastream.models import Job


class Verdict(enum.Enum):
    """What happens to a scored answer."""

    ACCEPT = "accept"              # passed, or nothing to score against
    REGENERATE = "regenerate"      # below threshold with attempts left
    ACCEPT_LOW = "accept_low"      # below threshold, out of attempts: keep the best


def judge(score: Optional[float], threshold: float, attempt: int, max_attempts: int) -> Verdict:
    """Decide the fate of the answer of generation ``attempt`` (1-based).

    An unscored answer (no reference answer known, or scoring switched off)
    is accepted: users asked for an answer, and rejecting it would mean
    regenerating forever against nothing.
    """
    if score is None or score >= threshold:
        return Verdict.ACCEPT
    if attempt < max_attempts:
        return Verdict.REGENERATE
    return Verdict.ACCEPT_LOW


def better(score: Optional[float], best: Optional[float]) -> bool:
    """True when ``score`` beats the best score seen so far."""
    if score is None:
        return False
    return best is None or score > best


def after_scoring(job: "Job", score: Optional[float], threshold: float, max_attempts: int) -> tuple[Verdict, "Job"]:
    """The verdict on ``job``'s answer and the job to send on.

    The job remembers its best answer across attempts (and the model that
    wrote it); when attempts run out, the best one (not the last) is kept,
    with its model, and flagged low quality.
    """
    first_score = score if job.attempt == 1 else job.first_score
    best = (job.best_answer, job.best_score, job.best_attempt, job.best_tokens, job.best_model)
    if job.best_answer is None or better(score, job.best_score):
        best = (job.answer, score, job.attempt, job.attempt_tokens, job.model)
    verdict = judge(score, threshold, job.attempt, max_attempts)
    # The answer kept if the question ended now: this attempt's when it passes, else the best one.
    kept_tokens = job.attempt_tokens if verdict is Verdict.ACCEPT else best[3]
    scored = job.derive(score=score, first_score=first_score, best_answer=best[0], best_score=best[1],
                        best_attempt=best[2], best_tokens=best[3], best_model=best[4], low_quality=False,
                        wasted_tokens=wasted(job, kept_tokens))
    if verdict is Verdict.ACCEPT_LOW:
        scored = scored.derive(answer=best[0], score=best[1], model=best[4] or job.model, low_quality=True)
    return verdict, scored


def keep_best(job: "Job") -> "Job":
    """The job that ends a question with its best answer so far, flagged low quality.

    For a question cancelled between attempts: the answers already paid for
    are kept, as when attempts run out, and no new one is asked for.  ``job``
    is the next attempt's job (no answer of its own yet).
    """
    return job.derive(attempt=job.attempt - 1, answer=job.best_answer, score=job.best_score, low_quality=True,
                      model=job.best_model or job.model, wasted_tokens=wasted(job, job.best_tokens))
