"""The status and attempts tables, and :func:`report`, which every stage uses to move a question on.

Stages never write tables themselves (an agent with ``concurrency > 1``
must not, and a table may only be written from a stream co-partitioned with
its changelog).  They send :class:`~qastream.models.StatusEvent` records to
the events topic, keyed by question id; the ``track`` agent
(:mod:`qastream.agents.track`) is the tables' only writer.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from qastream.app import app, settings, topics
from qastream.models import Job, event_for
from qastream.policy.lifecycle import Stage
from qastream.streaming.broker import table_options

logger = logging.getLogger(__name__)

status_table = app.Table("status", **table_options(settings, settings.partitions_events),
                         help="question_id -> where the question is (state, stage, attempt, result)")
attempts_table = app.Table("attempts", **table_options(settings, settings.partitions_events),
                           help="question_id -> LLM generations and error retries of the current epoch")


async def report(job: Job, stage: Stage, *, detail: Optional[str] = None,
                 result: Optional[dict[str, Any]] = None) -> None:
    """Tell the status table that ``job`` reached ``stage``."""
    await topics.events.send(key=job.question_id, value=event_for(job, stage, detail=detail, result=result))
