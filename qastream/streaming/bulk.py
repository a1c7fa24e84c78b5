"""Producing a batch's accepted questions: :func:`enqueue_batch`, the one way batch questions enter the graph.

A batch's questions are in the database (pending) before this runs, and the
``POST /batches`` answer does not wait for it: a send lost to a crash or a
broker outage leaves a pending question the status table never heard of,
which reconciliation re-enqueues after ``reconcile_after_seconds``.
"""

from __future__ import annotations

import logging
from typing import Sequence

from qastream.app import topics
from qastream.models import Job
from qastream.policy.lifecycle import Stage
from qastream.tables.status import report

logger = logging.getLogger(__name__)


async def enqueue_batch(jobs: Sequence[Job]) -> int:
    """Produce each job of a batch and report it queued; returns how many were sent.

    Sent to the pending topic for now: the integrator routes this to the bulk
    lane (its own topic, co-partitioned with pending), so a batch never
    delays interactive ``POST /query`` questions.  A ``queued`` event that
    arrives after the question was cancelled is stale for the status table
    (:func:`qastream.policy.lifecycle.fold_status`).
    """
    for job in jobs:
        await topics.pending.send(key=job.question_id, value=job)
        await report(job, Stage.QUEUED)
    return len(jobs)
