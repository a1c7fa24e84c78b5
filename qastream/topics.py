"""Every topic of the graph in one place (DESIGN §2), and the graph itself.

::

    POST /query ─► pending ─► [generate] ──────┬─► success ─► [validate] ─► validated ─► [store] ─► database + cache
    batches ─────► bulk ────► [generate_bulk] ─┤          └─► low_quality ─► [regenerate] ─┐
                     ▲                          ├─► overload ─► [retry_overload] ─┐         │
                     │                          ├─► quota ────► [retry_quota] ────┤         │
                     │                          └─► permanent ─► [dead_letters]   │         │
                     └──── retries and regenerations, each to its question's lane ┴─────────┘
    every stage ─► events ─► [track] ─► status and attempts tables
    store, dead_letters, batches ─► webhooks ─► [deliver_webhooks] ─► receivers (waits parked, back to webhooks)

:data:`GRAPH` says the same as data, one :class:`Edge` per agent, and a unit
test checks it against the agents the app really has.  Besides the edges,
every stage reports progress to ``events`` and any stage may dead-letter to
``permanent``; reconciliation (a timer, not an agent) re-enqueues to
a question's lane.

Two topics take questions in, one per :class:`~qastream.policy.lanes.Lane`
(:meth:`Topics.intake`): ``pending`` for interactive questions and ``bulk``
for batch questions.  Both feed the generate stage, which serves the
interactive lane first (:mod:`qastream.policy.priority`).  ``bulk`` has the
partition count of ``pending`` (and so of ``events`` and the status table):
the generate stage reads a question's status from the local table partition,
which is only its own when the two topics partition keys alike (DESIGN §3,
invariant 2).

All topics but ``webhooks`` (keyed by delivery id) are keyed by ``question_id`` with
the raw key serializer, the same encoding requests are routed by
(:func:`qastream.streaming.routing.owner_of`), so a key hashes to the same partition
number in every topic and reaches the worker whose ``track`` writes it (DESIGN §4, item 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from qastream.errors import ErrorClass
from qastream.models import Job, StatusEvent, WebhookDelivery
from qastream.policy.lanes import Lane, lane_of
from qastream.settings import Settings


@dataclass(frozen=True)
class Edge:
    """One agent: the :class:`Topics` attribute it consumes and the ones it produces to."""

    agent: str
    consumes: str
    produces: tuple[str, ...]


#: The graph, stage by stage (the agents in qastream/agents/, by function name).
GRAPH: tuple[Edge, ...] = (
    Edge("generate", "pending", ("success", "overload", "quota", "permanent")),
    Edge("generate_bulk", "bulk", ("success", "overload", "quota", "permanent")),
    Edge("validate", "success", ("validated", "low_quality", "permanent")),
    Edge("regenerate", "low_quality", ("pending", "bulk")),
    Edge("retry_overload", "overload", ("pending", "bulk", "permanent")),
    Edge("retry_quota", "quota", ("pending", "bulk", "permanent")),
    Edge("store", "validated", ()),
    Edge("dead_letters", "permanent", ()),
    Edge("track", "events", ()),
    Edge("deliver_webhooks", "webhooks", ("webhooks",)),
)


class Topics:
    """The topics of one app, named and sized by settings."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        def topic(name: str, partitions: int, value_type: type) -> faust.TopicT:
            # internal=True: Faust declares the topic with this partition count.
            # Otherwise the broker auto-creates it with its own default, and
            # the events topic no longer matches the table changelogs.
            return app.topic(settings.topic_name(name), key_type=str, key_serializer="raw",
                             value_type=value_type, partitions=partitions, internal=True)

        s = settings
        self.pending = topic(s.topic_pending, s.partitions_pending, Job)
        self.bulk = topic(s.topic_bulk, s.partitions_bulk, Job)
        self.success = topic(s.topic_success, s.partitions_success, Job)
        self.overload = topic(s.topic_overload, s.partitions_overload, Job)
        self.quota = topic(s.topic_quota, s.partitions_quota, Job)
        self.permanent = topic(s.topic_permanent, s.partitions_permanent, Job)
        self.validated = topic(s.topic_validated, s.partitions_validated, Job)
        self.low_quality = topic(s.topic_low_quality, s.partitions_low_quality, Job)
        self.events = topic(s.topic_events, s.partitions_events, StatusEvent)
        self.webhooks = topic(s.topic_webhooks, s.partitions_webhooks, WebhookDelivery)

    def layout(self) -> dict[str, int]:
        """Topic name -> partition count, for :func:`qastream.streaming.topic_admin.ensure_topics`."""
        return {t.get_topic_name(): t.partitions or 1 for t in (
            self.pending, self.bulk, self.success, self.overload, self.quota, self.permanent, self.validated,
            self.low_quality, self.events, self.webhooks)}

    def intake(self, lane: Lane | str) -> faust.TopicT:
        """The topic a question of ``lane`` enters the graph by, and goes back to for a retry or a
        regeneration (an unknown lane is interactive, see :func:`~qastream.policy.lanes.lane_of`)."""
        return self.bulk if lane_of(lane) is Lane.BULK else self.pending

    def for_error(self, error_class: str) -> faust.TopicT:
        """The error topic of an error class."""
        routes: dict[str, faust.TopicT] = {ErrorClass.OVERLOAD: self.overload, ErrorClass.QUOTA: self.quota}
        return routes.get(error_class, self.permanent)
