"""llm-responses-success -> BERTScore -> validated-responses or low-quality-responses.

Faust's ``take()`` acks the whole batch when the loop body raises, so an
exception here would drop up to ``scorer_batch_size`` answers with their
status stuck at ``scoring``.  Nothing may escape the loop:

* the scorer raises for a batch: each answer is scored alone once more, so
  one answer the scorer chokes on cannot fail the others (DESIGN §3,
  invariant 7); an answer that fails alone too is dead-lettered with the
  reason (class ``scoring``).  Storing it unscored would pass it through the
  quality gate unchecked; a dead letter keeps it visible and replayable
  (``qastream dlq replay``).
* a send raises (the broker is unreachable): the question is logged and left
  at ``scoring``; reconciliation re-enqueues it once the scoring deadline
  passes (qastream.policy.deadlines).
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence, Union

import faust

from qastream.app import app, scorer, settings, topics
from qastream.errors import ErrorClass
from qastream.models import Job
from qastream.policy.lifecycle import Stage
from qastream.policy.quality import Verdict, after_scoring
from qastream.tables.status import report

logger = logging.getLogger(__name__)

#: Longest a lone answer waits for others to fill a scoring batch.
BATCH_WINDOW_SECONDS = 0.05

#: A score, ``None`` (nothing to score against), or why scoring failed.
Outcome = Union[Optional[float], Exception]


async def score_all(jobs: Sequence[Job]) -> list[Outcome]:
    """Each job's score, or the exception that scoring it alone raised."""
    try:
        return list(await scorer.score([j.answer or "" for j in jobs], [j.original_answer for j in jobs]))
    except Exception as exc:
        logger.warning("scoring a batch of %d failed (%r): scoring each answer alone", len(jobs), exc)
    outcomes: list[Outcome] = []
    for job in jobs:
        try:
            (score,) = await scorer.score([job.answer or ""], [job.original_answer])
            outcomes.append(score)
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


async def route(job: Job, outcome: Outcome) -> None:
    """Send a scored answer on by the quality gate, or an unscorable one to the dead letters."""
    if isinstance(outcome, Exception):
        logger.error("%s attempt %d: scoring failed alone too, dead-lettering: %r", job.question_id, job.attempt,
                     outcome)
        await topics.permanent.send(key=job.question_id, value=job.derive(
            error_class=ErrorClass.SCORING, error_code=None, error_message=f"scoring failed: {outcome!r}"))
        return
    verdict, scored = after_scoring(job, outcome, settings.scorer_threshold, settings.max_attempts)
    if verdict is Verdict.REGENERATE:
        logger.info("%s attempt %d scored %.3f < %.3f: regenerating", job.question_id, job.attempt,
                    outcome, settings.scorer_threshold)
        await topics.low_quality.send(key=job.question_id, value=scored)
    else:
        await topics.validated.send(key=job.question_id, value=scored)


async def validate_batch(jobs: Sequence[Job]) -> None:
    """Score a batch of answers and route each; a failure is confined to its own question."""
    for job in jobs:
        try:
            await report(job, Stage.SCORING)
        except Exception as exc:  # the status stays where it was; scoring goes on
            logger.warning("%s: reporting scoring failed: %r", job.question_id, exc)
    outcomes = await score_all(jobs)
    for job, outcome in zip(jobs, outcomes):
        try:
            await route(job, outcome)
        except Exception as exc:
            logger.error("%s attempt %d: sending the scored answer on failed (%r); reconciliation re-enqueues "
                         "it after the scoring deadline", job.question_id, job.attempt, exc)


@app.agent(topics.success)
async def validate(jobs: faust.StreamT[Job]) -> None:
    """Score answers in batches (the scorer is far faster per pair in a batch)."""
    async for batch in jobs.take(settings.scorer_batch_size, within=BATCH_WINDOW_SECONDS):
        await validate_batch(batch)
