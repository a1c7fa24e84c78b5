"""The load command's pure parts: outcome of a POST /query answer, pacing, summary."""

import asyncio
import time

import pytest

from qastream.commands.load import (
    ACCEPTED,
    CACHE_HIT,
    DATABASE_HIT,
    IN_FLIGHT_OUTCOME,
    REJECTED,
    Outcome,
    http_outcome,
    percentiles,
    run_load,
    summary_lines,
)
from qastream.datasets import BadRows, Record


@pytest.mark.parametrize("status, body, kind, reason", [
    (202, {"message": "question accepted", "question_id": "a" * 16, "status": "pending"}, ACCEPTED, None),
    (202, {"message": "question is already being processed", "question_id": "a" * 16, "status": "processing"},
     IN_FLIGHT_OUTCOME, None),
    (202, {"message": "question is already being processed", "question_id": "a" * 16, "status": "pending"},
     IN_FLIGHT_OUTCOME, None),
    (200, {"status": "found", "source": "cache", "result": {"question_id": "a" * 16}}, CACHE_HIT, None),
    (200, {"status": "found", "source": "database", "result": {"question_id": "a" * 16}}, DATABASE_HIT, None),
    (400, {"error": "question_text is longer than 4000 characters"}, REJECTED,
     "HTTP 400: question_text is longer than 4000 characters"),
    (503, "not json", REJECTED, "HTTP 503: no error message"),
])
def test_http_outcome(status, body, kind, reason):
    outcome = http_outcome(status, body)
    assert outcome.kind == kind and outcome.reason == reason


def test_percentiles_nearest_rank():
    assert percentiles(list(range(1, 101))) == {"p50": 50, "p90": 90, "p99": 99, "max": 100}
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None, "max": None}


async def test_run_load_paces_bounds_concurrency_and_survives_errors():
    in_flight = peak = 0
    sent_at = []

    async def submit(record):
        nonlocal in_flight, peak
        sent_at.append(time.monotonic())
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        if record.question == "q3":
            raise RuntimeError("boom")
        return Outcome(ACCEPTED, record.question)

    records = [Record(f"q{i}", "a") for i in range(8)]
    started = time.monotonic()
    tally = await run_load(records, submit, rate=40.0, arrival="uniform", burst_size=1, concurrency=2, seed=1,
                           total=8)
    assert sent_at[-1] - started >= 7 / 40 - 0.01           # paced at 40/s
    assert peak <= 2                                          # at most 2 in flight
    assert tally.outcomes[ACCEPTED] == 7 and tally.rejected == {"error: RuntimeError: boom": 1}
    assert len(tally.latencies_ms) == 8
    text = "\n".join(summary_lines(tally, BadRows(), 1.0, rate=40.0, arrival="uniform"))
    assert "accepted                    7" in text and "error: RuntimeError: boom" in text
