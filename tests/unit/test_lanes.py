"""Lanes on the wire and on the graph: a bulk question enters by the bulk topic and stays on its lane."""

from __future__ import annotations

import json
import math

import pytest

from qastream.app import app, settings, topics
from qastream.db.queries import CREATED, Acceptance
from qastream.models import Job, event_for
from qastream.policy.lanes import Lane
from qastream.policy.lifecycle import Stage
from qastream.settings import Settings
from qastream.streaming import intake, requeue
from qastream.streaming.broker import max_poll_records


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, str, object]]:
    captured: list[tuple[str, str, object]] = []
    for topic in (topics.pending, topics.bulk, topics.events):
        async def send(*, key=None, value=None, _topic=topic, **kwargs):
            captured.append((_topic.get_topic_name(), key, value))
        monkeypatch.setattr(topic, "send", send)
    return captured


def test_a_job_written_before_lanes_existed_decodes_as_interactive():
    old = json.dumps({"question_id": "0123456789abcdef", "question_text": "What is a stack?", "attempt": 2}).encode()
    assert Job.loads(old).lane == Lane.INTERACTIVE
    new = Job(question_id="0123456789abcdef", question_text="What is a stack?", lane=Lane.BULK).dumps()
    assert json.loads(new)["lane"] == "bulk" and Job.loads(new).lane == Lane.BULK


def test_the_status_event_carries_the_lane():
    job = Job(question_id="0123456789abcdef", question_text="What is a stack?", lane=Lane.BULK)
    assert event_for(job, Stage.QUEUED).lane == "bulk"


@pytest.mark.parametrize("lane, topic", [(Lane.INTERACTIVE, "pending"), (Lane.BULK, "bulk"), ("bulk", "bulk"),
                                         ("interactive", "pending"), ("unknown", "pending")])
def test_each_lane_has_one_intake_topic(lane, topic):
    assert topics.intake(lane) is getattr(topics, topic)


def test_the_bulk_topic_is_co_partitioned_with_pending_and_keyed_raw():
    assert topics.bulk.partitions == topics.pending.partitions == topics.events.partitions
    assert topics.bulk.key_serializer == topics.pending.key_serializer == "raw"


def acceptance(qid: str) -> Acceptance:
    return Acceptance(kind=CREATED, question_id=qid, status="pending", epoch=2, accepted_at=10.0,
                      original_answer="ref", question_text=f"question {qid}")


async def test_enqueue_bulk_puts_jobs_on_the_bulk_topic_and_reports_them_queued(sent):
    jobs = [requeue.job_for(acceptance(f"{i:016x}")) for i in range(3)]
    assert await intake.enqueue_bulk(jobs) == 3
    bulk = [value for name, _, value in sent if name == topics.bulk.get_topic_name()]
    events = [value for name, _, value in sent if name == topics.events.get_topic_name()]
    assert [j.question_id for j in bulk] == [f"{i:016x}" for i in range(3)]
    assert {j.lane for j in bulk} == {"bulk"} and {(e.stage, e.lane) for e in events} == {("queued", "bulk")}
    assert not [1 for name, _, _ in sent if name == topics.pending.get_topic_name()]


async def test_requeue_sends_each_question_to_its_lane(sent):
    count = await requeue.enqueue([acceptance("a" * 16), acceptance("b" * 16), acceptance("c" * 16)],
                                  {"a" * 16: Lane.BULK, "b" * 16: Lane.INTERACTIVE})
    assert count == 3
    routed = {key: (name, value.lane, value.epoch) for name, key, value in sent
              if name != topics.events.get_topic_name()}
    assert routed == {"a" * 16: (topics.bulk.get_topic_name(), "bulk", 2),
                      "b" * 16: (topics.pending.get_topic_name(), "interactive", 2),
                      "c" * 16: (topics.pending.get_topic_name(), "interactive", 2)}


@pytest.mark.parametrize("size, partitions, expected", [
    (4096, 3, 205),   # the defaults
    (256, 3, 13),     # the priority integration test
    (4096, 12, 63),
    (16, 3, 1),
])
def test_one_fetch_never_fills_a_stream_buffer(size, partitions, expected):
    """From the mark where Faust stops fetching a partition, the records still to deliver fit in the buffer."""
    settings = Settings(stream_buffer_maxsize=size, partitions_pending=partitions, partitions_bulk=partitions,
                        partitions_events=partitions)
    records = max_poll_records(settings)
    assert records == expected
    assert math.floor(size / 1.25) + (partitions + 1) * records <= size


def test_the_app_fetches_in_bounded_batches():
    assert app.conf.broker_max_poll_records == max_poll_records(settings)
    assert app.conf.stream_buffer_maxsize == settings.stream_buffer_maxsize
