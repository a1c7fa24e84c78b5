"""The kcat commands of the README's debugging section, against the embedded Tansu broker.

DESIGN §4: kcat works with Tansu only with ``-X api.version.request=false -X
broker.version.fallback=0.9.0``, and then only for metadata and reads from
absolute offsets; these tests keep the README's commands honest.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from stackutil import missing

from qastream.streaming.topic_admin import ensure_topics

TANSU_FLAGS = ["-X", "api.version.request=false", "-X", "broker.version.fallback=0.9.0"]


@pytest.fixture
def kcat(broker):
    binary = shutil.which("kcat")
    if binary is None:
        missing("kcat is missing (make installs the Debian package kcat)")

    def run(*args: str) -> str:
        result = subprocess.run([binary, "-b", f"{broker.host}:{broker.port}", *TANSU_FLAGS, *args],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


def produce(broker, topic: str, values: list[dict]) -> None:
    async def send() -> None:
        # Created first: a worker's app in this process turns the broker's auto-creation off.
        await ensure_topics(broker.url, {topic: 1})
        producer = AIOKafkaProducer(bootstrap_servers=f"{broker.host}:{broker.port}", max_batch_size=16)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, key=value["question_id"].encode(),
                                             value=json.dumps(value).encode(), partition=0)
        finally:
            await producer.stop()

    asyncio.run(send())


def test_kcat_lists_metadata_and_reads_from_absolute_offsets(broker, kcat):
    topic = f"kcat-{uuid.uuid4().hex[:8]}"
    jobs = [{"question_id": f"{i:016x}", "question_text": f"question {i}"} for i in range(3)]
    produce(broker, topic, jobs)

    metadata = json.loads(kcat("-L", "-J", "-t", topic))
    assert [t["topic"] for t in metadata["topics"]] == [topic]

    lines = kcat("-C", "-t", topic, "-p", "0", "-o", "0", "-e", "-f", "%p %o %k %s\n").splitlines()
    assert [line.split(" ", 3)[:3] for line in lines] == [["0", str(i), f"{i:016x}"] for i in range(3)]
    assert json.loads(lines[2].split(" ", 3)[3]) == jobs[2]

    one = kcat("-C", "-t", topic, "-p", "0", "-o", "1", "-c", "1", "-f", "%o %k\n")
    assert one == f"1 {1:016x}\n"
