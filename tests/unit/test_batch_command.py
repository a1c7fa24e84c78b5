"""``qastream batch``: its HTTP calls against the worker's real web application (SQLite, no broker)."""

from __future__ import annotations

import json

import click
import pytest

import qastream.tables.parking  # noqa: F401  (the tables, as a worker discovers them)
import qastream.tables.status  # noqa: F401
from qastream.app import storage
from qastream.commands import batch as command
from qastream.datasets import Record
from qastream.web import access, batches, cancel, dashboard, health, metrics, openapi, prometheus, query, status  # noqa: F401,E501

SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")  # the shared client is bound to the session's loop


@pytest.fixture
def database(engine, monkeypatch):
    monkeypatch.setattr(storage, "engine", engine)

    async def enqueue_batch(jobs):
        return len(jobs)

    monkeypatch.setattr(batches, "enqueue_bulk", enqueue_batch)
    return engine


def test_records_become_ndjson_lines_with_their_ids_or_positions():
    body = command.ndjson_lines([Record("What is X?", "X is.", id="x1"), Record("What is Y?", "Y is.")])
    assert [json.loads(line) for line in body.decode().splitlines()] == [
        {"question_text": "What is X?", "original_answer": "X is.", "custom_id": "x1"},
        {"question_text": "What is Y?", "original_answer": "Y is.", "custom_id": "2"}]


@SESSION_LOOP
async def test_submit_status_results_and_cancel(client, database, tmp_path, capsys):
    dataset = tmp_path / "qs.jsonl"
    dataset.write_text("\n".join(json.dumps({"question": f"What is thing {n}?", "answer": "A thing.", "id": f"r{n}"})
                                 for n in range(3)) + "\n")
    url = str(client.make_url("")).rstrip("/")
    batch_id = await command.submit(client.session, url, str(dataset), "auto", None, False)
    assert capsys.readouterr().out.strip() == batch_id
    out = tmp_path / "results.jsonl"
    await command.results(client.session, url, batch_id, str(out))
    assert [json.loads(line)["custom_id"] for line in out.read_text().splitlines()] == ["r0", "r1", "r2"]
    async with client.session.delete(f"{url}/batches/{batch_id}") as response:
        state = await command.answer_of(response, "cancel")
    assert state["status"] == "cancelling" and command.progress_of(state) == 3
    with pytest.raises(click.ClickException, match="HTTP 404"):
        async with client.session.get(f"{url}/batches/batch_000000000000000000000000") as response:
            await command.answer_of(response, "status")


@SESSION_LOOP
async def test_a_refused_batch_names_its_bad_lines(client, database, tmp_path):
    dataset = tmp_path / "qs.jsonl"
    dataset.write_text(json.dumps({"question": "x" * 5000, "answer": "too long"}) + "\n")
    url = str(client.make_url("")).rstrip("/")
    with pytest.raises(click.ClickException, match="line 1: question_text is longer"):
        await command.submit(client.session, url, str(dataset), "auto", None, False)
