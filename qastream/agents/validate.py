"""llm-responses-success -> BERTScore -> validated-responses or low-quality-responses."""

from __future__ import annotations

import logging
from typing import Sequence

import faust

from qastream.app import app, scorer, settings, topics
from qastream.models import Job
from qastream.quality import Verdict, after_scoring
from qastream.tables.status import report

logger = logging.getLogger(__name__)

#: Longest a lone answer waits for others to fill a scoring batch.
BATCH_WINDOW_SECONDS = 0.05


async def validate_batch(jobs: Sequence[Job]) -> None:
    """Score a batch of answers and route each by the quality gate."""
    for job in jobs:
        await report(job, "scoring")
    scores = await scorer.score([j.answer or "" for j in jobs], [j.original_answer for j in jobs])
    for job, score in zip(jobs, scores):
        verdict, scored = after_scoring(job, score, settings.scorer_threshold, settings.max_attempts)
        if verdict is Verdict.REGENERATE:
            logger.info("%s attempt %d scored %.3f < %.3f: regenerating", job.question_id, job.attempt,
                        score, settings.scorer_threshold)
            await topics.low_quality.send(key=job.question_id, value=scored)
        else:
            await topics.validated.send(key=job.question_id, value=scored)


@app.agent(topics.success)
async def validate(jobs: faust.StreamT[Job]) -> None:
    """Score answers in batches (the scorer is far faster per pair in a batch)."""
    async for batch in jobs.take(settings.scorer_batch_size, within=BATCH_WINDOW_SECONDS):
        await validate_batch(batch)
