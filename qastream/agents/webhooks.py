"""webhook-deliveries -> receivers: one attempt per message, in a task of its own; waits parked, not slept.

The agent itself never waits for a receiver.  A ``send`` message starts the
attempt as a task of :class:`~qastream.services.webhooks.WebhookClient`
(bounded by its time-out and slots) and the agent moves on; when no slot is
free for the host, the delivery is parked for one time-out without using an
attempt.  A failed attempt comes back as a ``wait`` message, which the agent
parks (qastream.tables.parking); the release timer sends a ``release`` when it
is due, and the agent unparks it and starts the next attempt.  This is the
pattern of qastream.agents.retry: a dead receiver costs the graph nothing and
other deliveries at most the slots its host may hold.

Each attempt first claims its number in the database, so a duplicate message
(a redelivery, the sweep's copy) makes no second request, and a delivery the
database records as delivered is never POSTed again.  The sweep re-sends
pending deliveries whose message was lost (a worker died mid-attempt).
"""

from __future__ import annotations

import logging
import time
from typing import cast
from urllib.parse import urlsplit

import faust

from qastream.app import app, settings, storage, topics, webhook_client
from qastream.models import WebhookDelivery
from qastream.policy.webhook_targets import normal_host
from qastream.policy.webhooks import DeliveryState, Step, judge, request_headers, stale_after
from qastream.services.storage import until_written
from qastream.services.webhooks import AttemptResult
from qastream.streaming.timers import survives_failures
from qastream.tables.parking import ParkedDelivery, webhook_parking
from qastream.webhooks import send

logger = logging.getLogger(__name__)

backoff = settings.webhook_backoff()

#: Most lost deliveries one sweep re-sends.
SWEEP_LIMIT = 100


def park(delivery: WebhookDelivery, partition: int) -> None:
    """Hold ``delivery`` (``step`` wait, with its ``due_at``) until the release timer finds it due."""
    webhook_parking[delivery.delivery_id] = ParkedDelivery(delivery=delivery.asdict(), partition=partition)


def same_wait(parked: ParkedDelivery, release: WebhookDelivery) -> bool:
    """True when a release is for the wait that is parked now."""
    return (parked["delivery"]["attempt"], parked["delivery"]["due_at"]) == (release.attempt, release.due_at)


def dispatch(delivery: WebhookDelivery, partition: int) -> None:
    """Start the attempt if its host has a free slot; otherwise park it for one time-out."""
    host = normal_host(urlsplit(delivery.url).hostname or "")
    if webhook_client.try_start(host, lambda: attempt(delivery)):
        return
    app.runtime.webhook_counts["deferred"] += 1
    park(delivery.derive(step=Step.WAIT, due_at=time.time() + settings.webhook_timeout_seconds), partition)


async def attempt(delivery: WebhookDelivery) -> None:
    """Make attempt ``delivery.attempt`` (a task: no stage waits for it) and record how it went."""
    ident, number = delivery.delivery_id, delivery.attempt
    if number > backoff.max_attempts:  # re-sent after its last attempt was lost (schedule, the sweep)
        await storage.record_delivery(ident, number - 1, DeliveryState.FAILED, None,
                                      "the last attempt was lost (the worker stopped during it)", time.time())
        return
    if not await storage.claim_delivery(ident, number, time.time()):
        logger.info("webhook delivery %s attempt %d: done or made already, skipped", ident, number)
        return
    if settings.webhook_secret:
        body = delivery.body.encode("utf-8")
        result = await webhook_client.post(delivery.url, body, request_headers(
            settings.webhook_secret, body, ident, delivery.kind, number))
    else:
        result = AttemptResult(error="QASTREAM_WEBHOOK_SECRET is empty: nothing can be signed", refused=True)
    verdict = judge(backoff, number, result.status, result.refused)
    error = result.error
    now = time.time()
    await until_written(lambda: storage.record_delivery(ident, number, verdict.state, result.status, error, now),
                        f"webhook delivery {ident} attempt {number}")
    app.runtime.webhook_counts["retried" if verdict.state == DeliveryState.PENDING else verdict.state] += 1
    if verdict.state == DeliveryState.PENDING:
        assert verdict.retry_in is not None  # a pending verdict always says when to try again
        logger.info("webhook delivery %s attempt %d failed (%s); next in %.1f s", ident, number, error,
                    verdict.retry_in)
        await topics.webhooks.send(key=ident, value=delivery.derive(attempt=number + 1, step=Step.WAIT,
                                                                    due_at=now + verdict.retry_in))
    elif verdict.state == DeliveryState.FAILED:
        logger.warning("webhook delivery %s (%s of %s) failed after %d attempt(s): %s", ident, delivery.kind,
                       delivery.subject_id, number, error)


def handle(event: faust.EventT) -> None:
    """Start, park or release one delivery message."""
    delivery = cast(WebhookDelivery, event.value)
    partition = event.message.partition
    if delivery.step == Step.WAIT:
        park(delivery, partition)
        return
    if delivery.step == Step.RELEASE:
        parked = webhook_parking.get(delivery.delivery_id)
        if parked is None or not same_wait(parked, delivery):
            logger.debug("dropping duplicate release of webhook delivery %s", delivery.delivery_id)
            return
        del webhook_parking[delivery.delivery_id]
    dispatch(delivery, partition)


@app.agent(topics.webhooks)
async def deliver_webhooks(deliveries: faust.StreamT[WebhookDelivery]) -> None:
    """Deliver webhooks: attempts run as tasks, waits are parked (this agent is the parking table's only writer)."""
    async for event in deliveries.events():
        try:
            handle(event)
        except Exception as exc:  # a malformed message must not stop every other delivery
            logger.error("webhook delivery message at %s[%d]@%d not handled: %r", event.message.topic,
                         event.message.partition, event.message.offset, exc)


def due_deliveries(active_partitions: set[int], now: float) -> list[WebhookDelivery]:
    """Parked deliveries that are due, in partitions this worker actively owns, not already released."""
    due = []
    for ident, entry in list(webhook_parking.items()):
        delivery = WebhookDelivery(**entry["delivery"])
        if entry["partition"] in active_partitions and (delivery.due_at or 0.0) <= now \
                and app.runtime.released.get((webhook_parking.name, ident)) != delivery.due_at:
            due.append(delivery)
    return due


@app.timer(settings.retry_release_interval)
@survives_failures
async def release_due_deliveries() -> None:
    """Send due parked deliveries back to their topic as releases, for partitions this worker actively owns."""
    name = topics.webhooks.get_topic_name()
    active = {tp.partition for tp in app.consumer.assignment() if tp.topic == name}
    released = app.runtime.released
    keys = set(webhook_parking.keys())
    for key in [k for k in released if k[0] == webhook_parking.name and k[1] not in keys]:
        del released[key]  # unparked: forget the release
    for delivery in due_deliveries(active, time.time()):
        released[(webhook_parking.name, delivery.delivery_id)] = delivery.due_at or 0.0
        await topics.webhooks.send(key=delivery.delivery_id, value=delivery.derive(step=Step.RELEASE))


@app.timer(settings.reconcile_interval_seconds)
@survives_failures
async def sweep_lost_deliveries() -> None:
    """Send again pending deliveries untouched for longer than any live one can be (their message was lost)."""
    now = time.time()
    before = now - stale_after(backoff, settings.webhook_timeout_seconds, settings.deadline_margin_seconds)
    for delivery in await storage.take_stale_deliveries(before, now, SWEEP_LIMIT):
        logger.warning("webhook delivery %s lost its message after %d attempt(s); sending it again",
                       delivery.delivery_id, delivery.attempts)
        await send(delivery)
