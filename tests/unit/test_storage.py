"""qastream.services.storage: a row the database refuses fails alone; an outage is waited out."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError, StatementError

from qastream.db.queries import CREATED, StoredAnswer, Submission
from qastream.errors import RowRejected
from qastream.services.storage import (
    MAX_REASON_CHARS,
    Rejection,
    Storage,
    rejection_reason,
    rejects_row,
    storable,
    until_written,
    write_isolated,
)

NUL_ERROR = ValueError("A string literal cannot contain NUL (0x00) characters.")  # psycopg2's own
SURROGATE_ERROR = UnicodeEncodeError("utf-8", "a\ud800", 1, 2, "surrogates not allowed")  # sqlite3 and psycopg2


def dbapi(cls, orig: Exception, invalidated: bool = False):
    return cls("INSERT INTO questions ...", {"question_text": "x"}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize("exc, refused", [
    (dbapi(DataError, Exception("value too long for type character varying(16)")), True),
    (dbapi(IntegrityError, Exception("null value in column violates not-null constraint")), True),
    (NUL_ERROR, True),
    (SURROGATE_ERROR, True),
    (StatementError("encode failed", "INSERT ...", {}, SURROGATE_ERROR), True),
    (dbapi(OperationalError, Exception("could not connect to server: Connection refused")), False),
    (dbapi(InterfaceError, Exception("connection already closed")), False),
    (dbapi(DataError, Exception("server closed the connection"), invalidated=True), False),
    (StatementError("pool timeout", "SELECT 1", {}, TimeoutError()), False),
    (ConnectionRefusedError(111, "Connection refused"), False),
    (TimeoutError(), False),
    (RuntimeError("unexpected"), False),
])
def test_rejects_row(exc, refused):
    assert rejects_row(exc) is refused


@pytest.mark.parametrize("text, expected", [
    ("plain", "plain"),
    ("a\x00b", "a\\x00b"),
    ("a\ud800b", "a\\ud800b"),
    ("caf\u00e9 \U0001F600", "caf\u00e9 \U0001F600"),
])
def test_storable_escapes_what_no_column_takes(text, expected):
    assert storable(text) == expected
    storable(text).encode("utf-8")


def test_rejection_reason_is_the_drivers_words_on_one_storable_line():
    reason = rejection_reason(dbapi(DataError, Exception("value too long\nfor type varchar(16) near 'a\x00'")))
    assert reason == "Exception: value too long for type varchar(16) near 'a\\x00'"
    assert rejection_reason(StatementError("x", "s", {}, SURROGATE_ERROR)).startswith("UnicodeEncodeError: ")
    assert len(rejection_reason(ValueError("v" * 5000))) == MAX_REASON_CHARS


class FakeTable:
    """A write that refuses items containing "bad" and can be down for a number of calls."""

    def __init__(self, down_for: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.down_for = down_for

    async def __call__(self, items):
        self.calls.append(list(items))
        if self.down_for:
            self.down_for -= 1
            raise dbapi(OperationalError, Exception("connection refused"))
        if any("bad" in item for item in items):
            raise NUL_ERROR
        return [item.upper() for item in items]


async def test_write_isolated_writes_a_good_batch_in_one_call():
    write = FakeTable()
    assert await write_isolated(write, ["a", "b"]) == (["A", "B"], [])
    assert write.calls == [["a", "b"]]


async def test_write_isolated_refuses_only_the_bad_rows():
    write = FakeTable()
    written, refused = await write_isolated(write, ["a", "bad1", "b", "bad2"])
    assert written == ["A", "B"]
    assert refused == [Rejection("bad1", rejection_reason(NUL_ERROR)), Rejection("bad2", rejection_reason(NUL_ERROR))]
    assert write.calls == [["a", "bad1", "b", "bad2"], ["a"], ["bad1"], ["b"], ["bad2"]]


async def test_write_isolated_lets_an_outage_through():
    with pytest.raises(OperationalError):
        await write_isolated(FakeTable(down_for=1), ["a", "bad"])


async def test_until_written_waits_out_an_outage_then_isolates():
    write = FakeTable(down_for=2)
    written, refused = await until_written(lambda: write_isolated(write, ["a", "bad"]), "test", first_delay=0.01)
    assert written == ["A"] and [r.item for r in refused] == ["bad"]


async def test_until_written_raises_a_refused_row_instead_of_retrying_it_forever():
    write = FakeTable()
    with pytest.raises(ValueError):
        await until_written(lambda: write(["bad"]), "test", first_delay=0.01)
    assert write.calls == [["bad"]]


@pytest.fixture
async def sqlite_storage(tmp_path):
    storage = Storage(f"sqlite:///{tmp_path}/s.db")
    await storage.start()
    yield storage
    await storage.stop()


async def test_accept_refuses_one_submission_and_commits_the_rest_of_its_batch(sqlite_storage):
    """On a real database: 30 lone surrogates among 300 concurrent submissions fail alone."""
    now = time.time()
    subs = [Submission(f"{i:016x}", f"question {i}" + ("\ud800" if i % 10 == 0 else ""), None, now)
            for i in range(300)]
    outcomes = await asyncio.gather(*(sqlite_storage.accept(s) for s in subs), return_exceptions=True)
    refused = [(s, o) for s, o in zip(subs, outcomes) if isinstance(o, RowRejected)]
    accepted = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(refused) == 30 and all(s.question_id == o.question_id for s, o in refused)
    assert all("surrogates not allowed" in o.reason for _, o in refused)
    assert len(accepted) == 270 and all(o.kind == CREATED for o in accepted)
    assert await sqlite_storage.lookup(subs[0].question_id) is None
    assert (await sqlite_storage.lookup(subs[1].question_id))["status"] == "pending"


async def test_save_completed_isolated_on_a_real_database(sqlite_storage):
    now = time.time()

    def answer(qid: str, text: str) -> StoredAnswer:
        return StoredAnswer(question_id=qid, question_text="q " + qid, original_answer=None, accepted_at=now, epoch=1,
                            answer=text, score=0.5, first_score=0.5, processing_attempts=1, error_retries=0,
                            total_processing_time_ms=1.0, llm_time_ms=1.0, low_quality=False, model="m", at=now)

    rows = [answer("000000000000000a", "fine"), answer("000000000000000b", "bad \udc80"),
            answer("000000000000000c", "fine too")]
    written, refused = await write_isolated(sqlite_storage.save_completed, rows)
    assert [a.question_id for a in written] == ["000000000000000a", "000000000000000c"]
    assert [r.item.question_id for r in refused] == ["000000000000000b"]
    assert (await sqlite_storage.lookup("000000000000000c"))["status"] == "completed"
