"""Putting questions back on the graph: dead-letter replay, lost-message recovery.

The database is the store of record (a question is written there before
it is produced), so a question whose messages were lost -- the memory-only
development broker restarted, a topic was deleted -- can always be sent
again.  Every path goes through :func:`qastream.db.queries.resubmit`, which
starts a new epoch: whatever is left of the old one becomes stale.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping, Optional

from qastream.app import topics
from qastream.db.queries import Acceptance
from qastream.models import Job
from qastream.policy.lanes import Lane
from qastream.policy.lifecycle import Stage
from qastream.tables.status import report

logger = logging.getLogger(__name__)


def job_for(acceptance: Acceptance, lane: Lane = Lane.INTERACTIVE) -> Job:
    """The first job of a (re)submitted question on ``lane``: a fresh attempt and retry budget."""
    return Job(question_id=acceptance.question_id, question_text=acceptance.question_text or "",
               original_answer=acceptance.original_answer, accepted_at=acceptance.accepted_at,
               epoch=acceptance.epoch, lane=lane)


async def enqueue(acceptances: Iterable[Acceptance], lanes: Optional[Mapping[str, Lane]] = None) -> int:
    """Produce each question to its lane's topic and report it queued; returns how many.

    ``lanes`` maps a question id to the lane it was on (reconciliation reads
    it from the status table); a question not in it goes to the interactive lane.
    """
    count = 0
    for acceptance in acceptances:
        job = job_for(acceptance, (lanes or {}).get(acceptance.question_id, Lane.INTERACTIVE))
        await topics.intake(job.lane).send(key=job.question_id, value=job)
        await report(job, Stage.QUEUED)
        count += 1
    return count
