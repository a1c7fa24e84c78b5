"""low-quality-responses -> the question's lane (questions-pending or bulk) with the next attempt number."""

from __future__ import annotations

import logging

import faust

from qastream.app import app, topics
from qastream.models import Job
from qastream.policy.lifecycle import Stage
from qastream.tables.status import report

logger = logging.getLogger(__name__)


def next_attempt(job: Job) -> Job:
    """The job for the next generation: a fresh answer and fresh per-attempt retry budgets."""
    return job.derive(attempt=job.attempt + 1, answer=None, score=None, overload_retries=0, quota_retries=0,
                      error_class=None, error_code=None, error_message=None, retry_after=None)


@app.agent(topics.low_quality)
async def regenerate(jobs: faust.StreamT[Job]) -> None:
    """Send low-scoring questions back for another generation."""
    async for job in jobs:
        try:
            await report(job, Stage.REGENERATING, detail=f"score {job.score} below threshold")
            await topics.intake(job.lane).send(key=job.question_id, value=next_attempt(job))
        except Exception as exc:  # the broker is unreachable: the regenerating deadline takes over
            logger.error("%s attempt %d: sending the next attempt failed (%r); left to its stage deadline",
                         job.question_id, job.attempt, exc)
