"""qastream.streaming.routing: the worker owning a key is found by the raw key, as the events topic partitions it."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from faust.web.exceptions import ServiceUnavailable
from yarl import URL

from qastream.app import app
from qastream.streaming import routing
from qastream.tables.status import status_table

#: Keys whose raw bytes and JSON-quoted bytes hash to different partitions of three (seen on two workers).
KEYS = ["3f9681c5305dd1c9", "22450f4091633d53", "1aa4c799815df037"]


class Assignor:
    """Stands for Faust's assignor: partition (raw murmur2 of the key bytes it is given) -> worker URL."""

    def __init__(self, urls: dict[int, str]) -> None:
        self.urls = urls
        self.asked: list[tuple[str, bytes]] = []

    def key_store(self, topic: str, key: bytes) -> URL:
        self.asked.append((topic, key))
        partition = DefaultPartitioner()(key, [0, 1, 2], [0, 1, 2])
        return URL(self.urls[partition])


@pytest.fixture
def assignor(monkeypatch):
    here = str(app.conf.canonical_url)
    stand_in = Assignor({0: "http://127.0.0.1:1", 1: here, 2: "http://127.0.0.1:2"})
    monkeypatch.setitem(app.__dict__, "assignor", stand_in)   # a cached_property: the instance holds it
    return stand_in


@pytest.mark.parametrize("key", KEYS)
def test_the_owner_is_the_worker_of_the_raw_keys_partition(assignor, key):
    raw = DefaultPartitioner()(key.encode(), [0, 1, 2], [0, 1, 2])
    assert raw != DefaultPartitioner()(f'"{key}"'.encode(), [0, 1, 2], [0, 1, 2])  # JSON would go elsewhere
    owner = routing.owner_of(status_table.name, key)
    assert assignor.asked == [(status_table.changelog_topic.get_topic_name(), key.encode())]
    assert owner == (None if raw == 1 else URL(assignor.urls[raw]))


def test_no_owner_yet_is_a_503(assignor, monkeypatch):
    monkeypatch.setattr(assignor, "urls", {})
    with pytest.raises(ServiceUnavailable):
        routing.owner_of(status_table.name, KEYS[0])


def test_a_key_of_this_workers_partition_has_no_other_owner(assignor, monkeypatch):
    monkeypatch.setattr(assignor, "urls", dict.fromkeys(range(3), str(app.conf.canonical_url)))
    assert routing.owner_of(status_table.name, KEYS[0]) is None
