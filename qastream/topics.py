"""Every topic of the graph in one place (DESIGN §2).

All topics are keyed by ``question_id`` with the raw key serializer, the same
encoding the tables use, so a key hashes to the same partition number in a
topic, in a table changelog and in ``table_route`` (DESIGN §4, item 4).
"""

from __future__ import annotations

import faust

from qastream.models import Job, StatusEvent
from qastream.settings import Settings


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
        self.success = topic(s.topic_success, s.partitions_success, Job)
        self.overload = topic(s.topic_overload, s.partitions_overload, Job)
        self.quota = topic(s.topic_quota, s.partitions_quota, Job)
        self.permanent = topic(s.topic_permanent, s.partitions_permanent, Job)
        self.validated = topic(s.topic_validated, s.partitions_validated, Job)
        self.low_quality = topic(s.topic_low_quality, s.partitions_low_quality, Job)
        self.events = topic(s.topic_events, s.partitions_events, StatusEvent)

    def layout(self) -> dict[str, int]:
        """Topic name -> partition count, for :func:`qastream.topic_admin.ensure_topics`."""
        return {t.get_topic_name(): t.partitions for t in (
            self.pending, self.success, self.overload, self.quota, self.permanent, self.validated,
            self.low_quality, self.events)}

    def for_error(self, error_class: str) -> faust.TopicT:
        """The error topic of an error class."""
        return {"overload": self.overload, "quota": self.quota}.get(error_class, self.permanent)
