"""Parked retries: questions waiting out a retry delay, one table per retry topic; webhook deliveries likewise.

Sleeping inside an agent holds back every question behind the sleeper
(DESIGN §4 measured 12 s of delay for good work).  Instead the retry agent
parks the question in a table co-partitioned with its topic and moves on; a
timer releases due entries by sending them back to the same topic (same key,
same partition), and the agent, on receiving the release, deletes the entry
and re-enqueues the question.  Only the retry agents write these tables
(qastream.agents.retry): the timer just reads and sends.  A release that
arrives twice (a crash between send and delete) finds no entry the second
time and is dropped.  Webhook deliveries waiting for their next attempt park
the same way, in a table co-partitioned with the deliveries topic, written
only by ``deliver_webhooks`` (qastream.agents.webhooks).
"""

from __future__ import annotations

from typing import Any, TypedDict

from qastream.app import app, settings
from qastream.streaming.broker import table_options


class Parked(TypedDict):
    """A value of a parking table: the job to release (``Job.asdict()``, with its ``due_at``) and its partition.

    A plain dict at run time (see :class:`qastream.policy.lifecycle.StatusRecord` for why not a Record).
    """

    job: dict[str, Any]
    partition: int


overload_parking = app.Table("overload-parking", **table_options(settings, settings.partitions_overload),
                             help="question_id -> overload retry waiting for its due time")
quota_parking = app.Table("quota-parking", **table_options(settings, settings.partitions_quota),
                          help="question_id -> quota retry waiting for its due time")


class ParkedDelivery(TypedDict):
    """A value of the webhook parking table: the delivery to release (``WebhookDelivery.asdict()``) and its partition."""

    delivery: dict[str, Any]
    partition: int


webhook_parking = app.Table("webhook-parking", **table_options(settings, settings.partitions_webhooks),
                            help="delivery_id -> webhook delivery waiting for its next attempt")
