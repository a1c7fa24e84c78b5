"""Poison messages: a message no stage can decode goes to the dead-letter topic, with its reason.

Faust acks an undecodable message and then throws the error into the
agent's stream, which crashes and restarts the agent for every such message.
qastream's topics instead send a dead letter naming the topic, partition,
offset and reason, keep the raw payload for inspection, and let the stream
go on.  A poison message on the dead-letter topic itself is only logged,
so nothing can loop.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import faust
from faust.types import Message

from qastream.models import Job
from qastream.policy.ids import is_question_id

logger = logging.getLogger(__name__)

POISON = "poison"
MAX_PAYLOAD_CHARS = 4000

def poison_job(message: Message, reason: str) -> Job:
    """The dead letter describing an undecodable ``message``."""
    key = (message.key or b"").decode("utf-8", errors="replace")
    payload = (message.value or b"").decode("utf-8", errors="replace")[:MAX_PAYLOAD_CHARS]
    where = f"{message.topic}[{message.partition}]@{message.offset}"
    return Job(question_id=key if is_question_id(key) else "", question_text="", error_class=POISON,
               error_code=0, error_message=f"undecodable message on {where}: {reason}"[:2000], payload=payload)


class QAStreamTopic(faust.Topic):
    """A topic whose undecodable messages become dead letters instead of agent crashes."""

    #: Set by the app once the dead-letter topic exists.
    dead_letter_topic: Optional[Any] = None

    async def on_key_decode_error(self, exc: Exception, message: Message) -> None:
        await self._dead_letter(exc, message)

    async def on_value_decode_error(self, exc: Exception, message: Message) -> None:
        await self._dead_letter(exc, message)

    async def _dead_letter(self, exc: Exception, message: Message) -> None:
        self.app.runtime.poison_counts[message.topic] += 1  # type: ignore[attr-defined]  # a QAStreamApp
        job = poison_job(message, f"{type(exc).__name__}: {exc}")
        logger.error("poison message: %s", job.error_message)
        target = QAStreamTopic.dead_letter_topic
        if target is None or message.topic == target.get_topic_name():
            return
        await target.send(key=job.question_id or None, value=job)
