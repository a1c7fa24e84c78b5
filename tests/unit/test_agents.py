"""Every agent, driven through ``agent.test_context()`` with the broker, LLM, scorer and database mocked.

Only what leaves the process is replaced: topic sends are captured, and the
service calls (LLM, scorer, storage, cache) return canned results.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from typing import Any, Callable
from unittest.mock import AsyncMock

import pytest

from qastream.agents import dead_letters, expire, generate, regenerate, retry, store, validate
from qastream.agents.track import track
from qastream.app import app, cache, llm, scorer, settings, storage, topics
from qastream.errors import llm_call_error
from qastream.models import Job, StatusEvent, expiry_event
from qastream.policy.backoff import plan_retry
from qastream.policy.ids import generation_seed
from qastream.policy.lanes import Lane
from qastream.policy.lifecycle import fold_status, version
from qastream.services.llm import Generation
from qastream.services.storage import until_written
from qastream.tables.parking import overload_parking, quota_parking
from qastream.tables.status import attempts_table, status_table


@pytest.fixture(autouse=True)
def memory_app(monkeypatch):
    app.finalize()  # the app's store is already memory://, as in the Faust testing guide
    app.flow_control.resume()
    # generate asks the database whether a question was cancelled (qastream.web.cancel): not, unless a test says so.
    monkeypatch.setattr(storage, "is_cancelled", AsyncMock(return_value=False))
    yield
    for table in (status_table, attempts_table, overload_parking, quota_parking):
        table.data.clear()


@pytest.fixture(autouse=True)
def no_webhook_targets(monkeypatch):
    """No stored question names a webhook (test_webhook_delivery.py covers those that do)."""
    targets = AsyncMock(return_value={})
    monkeypatch.setattr(storage, "webhook_targets", targets)
    return targets


class Sent(list):
    """(topic name, key, value) of every send, in order; ``progress`` is set on each one."""

    def __init__(self) -> None:
        super().__init__()
        self.progress = asyncio.Event()

    async def until(self, predicate: Callable[[], Any], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, checking again after each effect a test double records.

        Agents that batch with take() act on their own timer, so a test waits for the effect; the
        time-out only bounds a hung agent, it orders nothing.
        """
        async def settled() -> None:
            while not predicate():
                self.progress.clear()
                await self.progress.wait()

        await asyncio.wait_for(settled(), timeout)

    def to(self, topic: Any) -> list[Any]:
        return [value for name, _, value in self if name == topic.get_topic_name()]

    def stages(self) -> list[str]:
        return [value.stage for value in self.to(topics.events)]


@pytest.fixture
def sent(monkeypatch) -> Sent:
    captured = Sent()
    for name in ("pending", "bulk", "success", "overload", "quota", "permanent", "validated", "low_quality",
                 "events"):
        topic = getattr(topics, name)

        async def send(*, key=None, value=None, _topic=topic, **kwargs):
            captured.append((_topic.get_topic_name(), key, value))
            captured.progress.set()

        monkeypatch.setattr(topic, "send", send)
    return captured


def job(**fields: Any) -> Job:
    base = {"question_id": "0123456789abcdef", "question_text": "What is a compiler?",
            "original_answer": "A compiler translates source code.", "accepted_at": 1000.0}
    return Job(**{**base, **fields})


# -- track ---------------------------------------------------------------------------

def event(stage: str, attempt: int = 1, retries: int = 0, epoch: int = 1, at: float = 2.0) -> StatusEvent:
    return StatusEvent(question_id="q1", stage=stage, epoch=epoch, attempt=attempt, retries=retries,
                       accepted_at=1.0, at=at)


async def test_track_folds_events_and_ignores_late_ones():
    async with track.test_context() as agent:
        for stage, attempt in (("queued", 1), ("generating", 1), ("scoring", 1), ("regenerating", 1),
                               ("generating", 2), ("scoring", 2), ("completed", 2)):
            await agent.put(event(stage, attempt), key="q1")
        done = dict(status_table["q1"])
        assert done["state"] == "completed" and done["attempt"] == 2
        assert attempts_table["q1"] == {"epoch": 1, "generations": 2, "retries": 0}
        # A late event from attempt 1 and a redelivered completion change nothing.
        await agent.put(event("scoring", 1, at=9.0), key="q1")
        await agent.put(event("completed", 2), key="q1")
        assert status_table["q1"] == done
        assert attempts_table["q1"] == {"epoch": 1, "generations": 2, "retries": 0}


async def test_track_starts_over_on_a_new_epoch():
    async with track.test_context() as agent:
        await agent.put(event("failed", 1, epoch=1), key="q1")
        await agent.put(event("queued", 1, epoch=2), key="q1")
        assert status_table["q1"]["state"] == "pending"
        assert attempts_table["q1"] == {"epoch": 2, "generations": 0, "retries": 0}


async def test_track_expires_only_the_finished_version_the_timer_saw():
    async with track.test_context() as agent:
        await agent.put(event("completed", 1), key="q1")
        stale_expiry = expiry_event(status_table["q1"], now=50.0)
        await agent.put(event("queued", 1, epoch=2), key="q1")   # resubmitted before the expiry arrived
        await agent.put(stale_expiry, key="q1")
        assert status_table["q1"]["epoch"] == 2 and "q1" in attempts_table
        await agent.put(event("failed", 1, epoch=2), key="q1")
        final = expiry_event(status_table["q1"], now=60.0)
        await agent.put(final, key="q1")
        assert "q1" not in status_table and "q1" not in attempts_table
        await agent.put(final, key="q1")
        assert "q1" not in status_table  # a redelivered expiry finds nothing and writes nothing


async def test_track_does_not_expire_a_question_in_flight():
    async with track.test_context() as agent:
        await agent.put(event("generating", 1), key="q1")
        await agent.put(expiry_event(status_table["q1"], now=50.0), key="q1")
        assert status_table["q1"]["state"] == "processing"


async def test_expiry_timer_sends_once_per_version_for_owned_finished_questions(sent, monkeypatch):
    async def all_owned(ids):
        return [qid for qid in ids if qid != "mine-not"]
    monkeypatch.setattr(expire, "owned", all_owned)
    app.runtime.expiring.clear()
    retention = settings.status_retention_seconds
    old, now = 100.0, 100.0 + retention + 1
    for qid, stage, at in (("done", "completed", old), ("fresh", "completed", now), ("busy", "generating", old),
                           ("mine-not", "failed", old)):
        status_table.data[qid] = fold_status(None, {**event(stage, at=at).asdict(), "question_id": qid})
    assert await expire.send_expiries(now) == 1
    [expiry] = sent.to(topics.events)
    assert expiry.question_id == "done" and expiry.stage == "expire"
    assert await expire.send_expiries(now + 1) == 0   # not applied yet: not sent again
    del status_table.data["done"]                       # applied
    assert await expire.send_expiries(now + 2) == 0 and "done" not in app.runtime.expiring

async def test_generate_sends_the_answer_on(sent, monkeypatch):
    call = AsyncMock(return_value=Generation("An answer.", "smollm2", 120.0, 3))
    monkeypatch.setattr(llm, "generate", call)
    async with generate.generate.test_context() as agent:
        await agent.put(job(llm_ms=5.0, attempt=2), key="0123456789abcdef")
    # No escalation model: the regeneration (attempt 2) is written by the configured model.
    call.assert_awaited_once_with("What is a compiler?", generation_seed("0123456789abcdef", 1, 2),
                                  model="smollm2", avoid=None, probe=None)
    (answered,) = sent.to(topics.success)
    assert answered.answer == "An answer." and answered.model == "smollm2"
    assert answered.llm_ms == pytest.approx(125.0)
    assert sent.stages() == ["generating"]


async def test_generate_adds_the_calls_tokens_to_the_question_and_the_worker(sent, monkeypatch):
    generation = Generation("An answer.", "smollm2", 120.0, 30, prompt_tokens=12, eval_ns=300_000_000,
                            load_ns=5_000_000, total_ns=320_000_000, server="http://llm:11434")
    monkeypatch.setattr(llm, "generate", AsyncMock(return_value=generation))
    async with generate.generate.test_context() as agent:
        await agent.put(job(attempt=2, prompt_tokens=10, eval_tokens=40, eval_ms=200.0, first_model="tiny"),
                        key="0123456789abcdef")
    (answered,) = sent.to(topics.success)
    assert (answered.prompt_tokens, answered.eval_tokens, answered.attempt_tokens) == (22, 70, 42)
    assert answered.eval_ms == pytest.approx(500.0) and answered.load_ms == pytest.approx(5.0)
    assert answered.first_model == "tiny"   # attempt 2 keeps attempt 1's model
    (source,) = app.runtime.tokens.snapshot()
    assert (source["model"], source["server"], source["eval_tokens"], source["eval_tokens_per_second"]) == \
        ("smollm2", "http://llm:11434", 30, 100.0)


@pytest.mark.parametrize("attempt, retries, model", [(1, 0, "smollm2"), (1, 2, "smollm2"), (2, 0, "big"),
                                                     (3, 1, "big")])
async def test_generate_asks_the_escalation_model_for_regenerations_only(sent, monkeypatch, attempt, retries, model):
    call = AsyncMock(return_value=Generation("An answer.", model, 1.0, 3, server="http://b:1"))
    monkeypatch.setattr(llm, "generate", call)
    monkeypatch.setattr(generate, "settings", dataclasses.replace(settings, escalation_model="big"))
    async with generate.generate.test_context() as agent:
        await agent.put(job(attempt=attempt, retries=retries, last_server="http://a:1"), key="0123456789abcdef")
    # An error retry (retries > 0) keeps its attempt's model; the server it failed on is avoided.
    call.assert_awaited_once_with("What is a compiler?", generation_seed("0123456789abcdef", 1, attempt),
                                  model=model, avoid="http://a:1", probe=None)
    (answered,) = sent.to(topics.success)
    assert answered.model == model and answered.last_server is None


async def test_generate_records_the_server_that_failed_for_the_retry(sent, monkeypatch):
    error = llm_call_error("overload", 0, "ConnectError")
    error.server, error.outage = "http://a:1", True
    monkeypatch.setattr(llm, "generate", AsyncMock(side_effect=error))
    async with generate.generate.test_context() as agent:
        await agent.put(job(), key="0123456789abcdef")
    (failed,) = sent.to(topics.overload)
    assert (failed.last_server, failed.outage) == ("http://a:1", True)


@pytest.mark.parametrize("error_class, topic_name", [("overload", "overload"), ("quota", "quota"),
                                                     ("permanent", "permanent")])
async def test_generate_routes_failures_by_class(sent, monkeypatch, error_class, topic_name):
    error = llm_call_error(error_class, 503, "busy", retry_after=3.0)
    monkeypatch.setattr(llm, "generate", AsyncMock(side_effect=error))
    async with generate.generate.test_context() as agent:
        await agent.put(job(), key="0123456789abcdef")
    (failed,) = sent.to(getattr(topics, topic_name))
    assert (failed.error_class, failed.error_code, failed.error_message, failed.retry_after) == (
        error_class, 503, "busy", 3.0)
    assert sent.to(topics.success) == []


async def test_generate_skips_an_attempt_that_already_finished(sent, monkeypatch):
    call = AsyncMock()
    monkeypatch.setattr(llm, "generate", call)
    status_table.data["0123456789abcdef"] = {"version": list(version(1, 1, 0, "scoring"))}
    async with generate.generate.test_context() as agent:
        await agent.put(job(attempt=1), key="0123456789abcdef")
    call.assert_not_called()
    assert sent == []


async def test_generate_starts_no_call_for_a_question_the_status_table_has_cancelled(sent, monkeypatch):
    call = AsyncMock()
    monkeypatch.setattr(llm, "generate", call)
    status_table.data["0123456789abcdef"] = {"state": "cancelled", "epoch": 1, "version": list(version(1, 1, 0, "cancelled"))}
    async with generate.generate.test_context() as agent:
        await agent.put(job(attempt=1, retries=2), key="0123456789abcdef")   # a retry of the cancelled epoch
    call.assert_not_called()
    assert sent == []
    storage.is_cancelled.assert_not_awaited()  # the table answered: no database read


async def test_generate_reads_the_database_before_the_call_and_reports_the_cancel(sent, monkeypatch):
    call = AsyncMock()
    monkeypatch.setattr(llm, "generate", call)
    monkeypatch.setattr(storage, "is_cancelled", AsyncMock(return_value=True))
    async with generate.generate.test_context() as agent:
        await agent.put(job(epoch=3), key="0123456789abcdef")
    call.assert_not_called()
    storage.is_cancelled.assert_awaited_once_with("0123456789abcdef", 3)
    assert sent.stages() == ["cancelled"]


async def test_a_cancelled_regeneration_stores_the_best_answer_so_far(sent, monkeypatch):
    call = AsyncMock()
    monkeypatch.setattr(llm, "generate", call)
    monkeypatch.setattr(storage, "is_cancelled", AsyncMock(return_value=True))
    async with generate.generate.test_context() as agent:
        await agent.put(job(attempt=3, best_answer="the best", best_score=0.2, best_attempt=2),
                        key="0123456789abcdef")
    call.assert_not_called()
    (kept,) = sent.to(topics.validated)
    assert (kept.answer, kept.score, kept.attempt, kept.low_quality) == ("the best", 0.2, 2, True)


async def test_generate_goes_on_when_the_database_cannot_say(sent, monkeypatch):
    monkeypatch.setattr(llm, "generate", AsyncMock(return_value=Generation("An answer.", "smollm2", 1.0, 3)))
    monkeypatch.setattr(storage, "is_cancelled", AsyncMock(side_effect=OSError("database down")))
    async with generate.generate.test_context() as agent:
        await agent.put(job(), key="0123456789abcdef")
    assert len(sent.to(topics.success)) == 1


async def test_generate_bulk_marks_its_jobs_bulk_and_routes_them_like_interactive_ones(sent, monkeypatch):
    monkeypatch.setattr(llm, "generate", AsyncMock(side_effect=[Generation("An answer.", "smollm2", 1.0, 3),
                                                                llm_call_error("overload", 503, "busy")]))
    async with generate.generate_bulk.test_context() as agent:
        await agent.put(job(question_id="00000000000000aa"), key="00000000000000aa")  # written without a lane
        await agent.put(job(question_id="00000000000000bb", lane="bulk"), key="00000000000000bb")
    (answered,) = sent.to(topics.success)
    (failed,) = sent.to(topics.overload)
    assert (answered.lane, failed.lane) == ("bulk", "bulk")
    assert [e.lane for e in sent.to(topics.events)] == ["bulk", "bulk"]


async def test_generate_waits_for_a_slot_of_the_shared_gate(sent, monkeypatch):
    call = AsyncMock(return_value=Generation("An answer.", "smollm2", 1.0, 3))
    monkeypatch.setattr(llm, "generate", call)
    gate = app.runtime.llm_slots
    for _ in range(gate.slots):  # every slot busy with bulk calls
        await gate.acquire(Lane.BULK)
    async with generate.generate.test_context() as agent:
        put = asyncio.create_task(agent.put(job(), key="0123456789abcdef"))
        await asyncio.sleep(0.05)
        assert call.await_count == 0 and gate.waiting(Lane.INTERACTIVE) == 1
        gate.release()
        await put
    call.assert_awaited_once()
    assert gate.snapshot()["granted"] == {"interactive": 1, "bulk": gate.slots}


async def test_the_gate_sees_the_questions_waiting_in_a_stream_buffer(sent, monkeypatch):
    """What generate.buffered reads: the one queue the agent's actors share."""
    release = asyncio.Event()

    async def blocked(*args, **kwargs):
        await release.wait()
        return Generation("An answer.", "smollm2", 1.0, 3)

    monkeypatch.setattr(llm, "generate", blocked)
    async with generate.generate.test_context() as agent:
        actors = agent.concurrency
        puts = [asyncio.create_task(agent.put(job(question_id=f"{i:016x}"), key=f"{i:016x}"))
                for i in range(actors + 5)]
        await sent.until(lambda: len(sent.stages()) == actors)   # every actor is in an LLM call
        assert generate.stream_backlog(agent) == 5
        release.set()
        await asyncio.gather(*puts)
        assert generate.stream_backlog(agent) == 0
    assert generate.stream_backlog(object()) == 0   # Faust's internals changed: nothing, not an error


# -- validate ---------------------------------------------------------------------------

@pytest.mark.parametrize("score, attempt, topic_name, low_quality", [
    (0.95, 1, "validated", False),
    (0.10, 1, "low_quality", False),
    (0.10, settings.max_attempts, "validated", True),
])
async def test_validate_applies_the_quality_gate(sent, monkeypatch, score, attempt, topic_name, low_quality):
    monkeypatch.setattr(scorer, "score", AsyncMock(return_value=[score]))
    best = {"best_answer": "earlier, better", "best_score": 0.5, "best_attempt": 1} if attempt > 1 else {}
    async with validate.validate.test_context() as agent:
        await agent.put(job(answer="ans", attempt=attempt, **best), key="0123456789abcdef")
        await sent.until(lambda: sent.to(getattr(topics, topic_name)))
    (scored,) = sent.to(getattr(topics, topic_name))
    assert scored.low_quality is low_quality
    if low_quality:
        assert (scored.answer, scored.score) == ("earlier, better", 0.5)
    else:
        assert scored.score == score
    assert "scoring" in sent.stages()


def scorer_failing_on(bad_answers: set[str]):
    """A scorer that raises for any batch holding one of ``bad_answers`` and scores the rest 0.9."""
    async def score(candidates, references):
        if bad_answers & set(candidates):
            raise RuntimeError("CUDA out of memory")
        return [0.9] * len(candidates)
    return AsyncMock(side_effect=score)


async def test_validate_scores_each_answer_alone_when_the_batch_fails(sent, monkeypatch):
    """One answer the scorer chokes on is dead-lettered with the reason; the others of its batch go on."""
    monkeypatch.setattr(scorer, "score", scorer_failing_on({"poisoned"}))
    jobs = [job(question_id=f"{i:016x}", answer="poisoned" if i == 1 else f"fine {i}") for i in range(3)]
    await validate.validate_batch(jobs)
    assert [j.question_id for j in sent.to(topics.validated)] == [f"{0:016x}", f"{2:016x}"]
    (dead,) = sent.to(topics.permanent)
    assert dead.question_id == f"{1:016x}" and dead.error_class == "scoring"
    assert "CUDA out of memory" in dead.error_message


async def test_validate_dead_letters_a_whole_batch_the_scorer_always_fails(sent, monkeypatch):
    monkeypatch.setattr(scorer, "score", AsyncMock(side_effect=RuntimeError("model gone")))
    async with validate.validate.test_context() as agent:
        for i in range(3):
            await agent.put(job(question_id=f"{i:016x}", answer=f"a{i}"), key=f"{i:016x}")
        await sent.until(lambda: len(sent.to(topics.permanent)) == 3)
    assert not sent.to(topics.validated) and not sent.to(topics.low_quality)
    assert {d.error_class for d in sent.to(topics.permanent)} == {"scoring"}


async def test_validate_keeps_going_when_a_send_raises(sent, monkeypatch):
    """A send that fails for one answer neither drops the others nor stops the agent."""
    monkeypatch.setattr(scorer, "score", AsyncMock(side_effect=lambda c, r: [0.9] * len(c)))
    original = topics.validated.send

    async def send(*, key=None, value=None, **kwargs):
        if key == f"{1:016x}":
            raise RuntimeError("KafkaTimeoutError")
        await original(key=key, value=value, **kwargs)

    monkeypatch.setattr(topics.validated, "send", send)
    await validate.validate_batch([job(question_id=f"{i:016x}", answer=f"a{i}") for i in range(3)])
    assert [j.question_id for j in sent.to(topics.validated)] == [f"{0:016x}", f"{2:016x}"]


async def test_generate_survives_a_send_that_raises(sent, monkeypatch):
    monkeypatch.setattr(llm, "generate", AsyncMock(return_value=Generation("An answer.", "smollm2", 1.0, 3)))

    async def send(*, key=None, value=None, **kwargs):
        raise RuntimeError("KafkaTimeoutError")

    monkeypatch.setattr(topics.success, "send", send)
    async with generate.generate.test_context() as agent:
        await agent.put(job(question_id="00000000000000aa"), key="00000000000000aa")
        await agent.put(job(question_id="00000000000000bb"), key="00000000000000bb")
    assert sent.stages() == ["generating", "generating"]  # both reached the LLM: the agent kept running


# -- regenerate ---------------------------------------------------------------------------

async def test_regenerate_sends_the_next_attempt(sent):
    async with regenerate.regenerate.test_context() as agent:
        await agent.put(job(attempt=1, answer="weak", score=0.2, overload_retries=2), key="0123456789abcdef")
    (nxt,) = sent.to(topics.pending)
    assert (nxt.attempt, nxt.answer, nxt.score, nxt.overload_retries) == (2, None, None, 0)
    assert sent.stages() == ["regenerating"]


# -- retry -----------------------------------------------------------------------------------

QID = "0123456789abcdef"


async def test_a_failure_is_parked_not_slept_on(sent):
    before = time.time()
    async with retry.retry_overload.test_context() as agent:
        await agent.put(job(error_class="overload", error_code=503, overload_retries=1, retries=1), key=QID)
    parked = overload_parking[QID]["job"]
    assert (parked["retries"], parked["overload_retries"]) == (2, 2)
    assert before + settings.overload_delays()[1] <= parked["due_at"] <= time.time() + settings.overload_delays()[1]
    assert sent.to(topics.pending) == []  # nothing waits inside the agent
    assert sent.stages() == ["waiting_retry"]


async def test_retry_survives_a_send_that_raises(sent, monkeypatch):
    async def send(*, key=None, value=None, **kwargs):
        raise RuntimeError("KafkaTimeoutError")

    monkeypatch.setattr(topics.permanent, "send", send)
    async with retry.retry_overload.test_context() as agent:
        # Out of retries: the dead-letter send raises; the agent goes on to the next failure.
        await agent.put(job(question_id="00000000000000aa", error_class="overload", overload_retries=3),
                        key="00000000000000aa")
        await agent.put(job(question_id="00000000000000bb", error_class="overload"), key="00000000000000bb")
    assert "00000000000000bb" in overload_parking


async def test_regenerate_sends_a_bulk_question_back_to_the_bulk_lane(sent):
    async with regenerate.regenerate.test_context() as agent:
        await agent.put(job(attempt=1, answer="weak", score=0.2, lane="bulk"), key="0123456789abcdef")
    (nxt,) = sent.to(topics.bulk)
    assert (nxt.attempt, nxt.lane) == (2, "bulk") and sent.to(topics.pending) == []


async def test_a_released_bulk_retry_goes_back_to_the_bulk_lane(sent):
    async with retry.retry_quota.test_context() as agent:
        await agent.put(job(error_class="quota", error_code=429, lane="bulk"), key=QID)
        await agent.put(Job(**quota_parking[QID]["job"]), key=QID)
    (again,) = sent.to(topics.bulk)
    assert again.lane == "bulk" and sent.to(topics.pending) == []


async def test_regenerate_survives_a_send_that_raises(sent, monkeypatch):
    async def send(*, key=None, value=None, **kwargs):
        raise RuntimeError("KafkaTimeoutError")

    monkeypatch.setattr(topics.pending, "send", send)
    async with regenerate.regenerate.test_context() as agent:
        await agent.put(job(question_id="00000000000000aa", score=0.1), key="00000000000000aa")
        await agent.put(job(question_id="00000000000000bb", score=0.1), key="00000000000000bb")
    assert sent.stages() == ["regenerating", "regenerating"]


async def test_a_release_unparks_and_requeues_once(sent):
    async with retry.retry_overload.test_context() as agent:
        await agent.put(job(error_class="overload", error_code=503), key=QID)
        release = Job(**overload_parking[QID]["job"])
        await agent.put(release, key=QID)
        await agent.put(release, key=QID)  # released twice (crash between send and delete)
    assert QID not in overload_parking
    (again,) = sent.to(topics.pending)
    assert again.due_at is None and again.retries == 1


async def test_quota_retry_honours_retry_after(sent):
    async with retry.retry_quota.test_context() as agent:
        await agent.put(job(error_class="quota", error_code=429, retry_after=7.0), key=QID)
    parked = quota_parking[QID]["job"]
    assert parked["due_at"] - time.time() == pytest.approx(7.0, abs=1.0)
    assert parked["quota_retries"] == 1


async def test_retry_dead_letters_when_the_schedule_is_spent(sent):
    spent = len(settings.overload_delays())
    async with retry.retry_overload.test_context() as agent:
        await agent.put(job(error_class="overload", error_code=503, error_message="busy", overload_retries=spent),
                        key=QID)
    (dead,) = sent.to(topics.permanent)
    assert "gave up after 3 overload retries" in dead.error_message
    assert QID not in overload_parking


def test_an_outage_failure_does_not_use_the_retry_budget():
    parked = plan_retry(retry.policy, job(error_class="overload", overload_retries=3, outage=True), 100.0, 8.0)
    assert (parked.overload_retries, parked.retries, parked.due_at, parked.outage) == (3, 1, 108.0, False)
    assert plan_retry(retry.policy, job(error_class="overload", overload_retries=3), 100.0, 8.0) is None


def test_due_entries_only_from_active_partitions_and_once():
    overload_parking.data["a" * 16] = {"job": job(question_id="a" * 16, due_at=10.0).asdict(), "partition": 0}
    overload_parking.data["b" * 16] = {"job": job(question_id="b" * 16, due_at=10.0).asdict(), "partition": 1}
    overload_parking.data["c" * 16] = {"job": job(question_id="c" * 16, due_at=99.0).asdict(), "partition": 0}
    due = retry.due_entries(overload_parking, {0}, now=20.0)
    assert [j.question_id for j in due] == ["a" * 16]
    app.runtime.released[(overload_parking.name, "a" * 16)] = 10.0
    assert retry.due_entries(overload_parking, {0}, now=20.0) == []


# -- store and dead letters ----------------------------------------------------------------

async def test_store_writes_caches_and_completes(sent, monkeypatch):
    save = AsyncMock(side_effect=lambda answers: list(answers))
    put = AsyncMock()
    monkeypatch.setattr(storage, "save_completed", save)
    monkeypatch.setattr(cache, "put_many", put)
    async with store.store.test_context() as agent:
        await agent.put(job(answer="ans", score=0.9, model="m", eval_tokens=40, wasted_tokens=15, first_model="m"),
                        key="0123456789abcdef")
        await sent.until(lambda: sent.to(topics.events))
    (row,) = save.await_args.args[0]
    assert (row.answer, row.score, row.processing_attempts) == ("ans", 0.9, 1)
    assert (row.usage.eval_tokens, row.usage.wasted_tokens, row.usage.first_model) == (40, 15, "m")
    (completed,) = sent.to(topics.events)
    assert completed.stage == "completed" and completed.result["answer"] == "ans"
    assert put.await_args.args[0][0]["question_id"] == "0123456789abcdef"


async def test_store_skips_a_stale_answer(sent, monkeypatch):
    monkeypatch.setattr(storage, "save_completed", AsyncMock(return_value=[]))
    put = AsyncMock(side_effect=lambda *_: sent.progress.set())
    monkeypatch.setattr(cache, "put_many", put)
    async with store.store.test_context() as agent:
        await agent.put(job(answer="old", epoch=1), key="0123456789abcdef")
        await sent.until(lambda: put.await_count == 1)
    assert sent.to(topics.events) == []
    assert put.await_args.args[0] == []


async def test_dead_letters_mark_the_question_failed(sent, monkeypatch):
    save = AsyncMock(side_effect=lambda failures: list(failures))
    monkeypatch.setattr(storage, "save_failed", save)
    async with dead_letters.dead_letters.test_context() as agent:
        await agent.put(job(error_class="permanent", error_code=404, error_message="model not found"),
                        key="0123456789abcdef")
        await sent.until(lambda: sent.to(topics.events))
    (failure,) = save.await_args.args[0]
    assert "404" in failure.error_message and "model not found" in failure.error_message
    (failed,) = sent.to(topics.events)
    assert failed.stage == "failed" and "model not found" in failed.detail


async def test_store_waits_for_the_database_instead_of_dropping_the_batch(sent, monkeypatch):
    """take() acks a batch when the loop body raises, so a failed write must be retried, not raised."""
    outcomes = [ConnectionError("database down"), ConnectionError("still down"), None]

    async def save(answers):
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return list(answers)

    waited: list[float] = []

    async def clock(seconds: float) -> None:  # the back-off, without waiting it out
        waited.append(seconds)

    monkeypatch.setattr(storage, "save_completed", save)
    monkeypatch.setattr(cache, "put_many", AsyncMock())
    monkeypatch.setattr(store, "until_written", functools.partial(until_written, sleep=clock))
    async with store.store.test_context() as agent:
        await agent.put(job(answer="ans", score=0.9), key="0123456789abcdef")
        await sent.until(lambda: sent.to(topics.events))
    assert outcomes == []
    assert waited == [0.5, 1.0]
    (completed,) = sent.to(topics.events)
    assert completed.stage == "completed"


NUL_REFUSED = ValueError("A string literal cannot contain NUL (0x00) characters.")  # what psycopg2 raises


async def test_store_dead_letters_an_answer_the_database_refuses_and_goes_on(sent, monkeypatch):
    """One refused row used to block the stage forever (until_written retried it); now it fails alone."""
    async def save(answers):
        if any("\x00" in a.answer for a in answers):
            raise NUL_REFUSED
        return list(answers)

    monkeypatch.setattr(storage, "save_completed", save)
    monkeypatch.setattr(cache, "put_many", AsyncMock())
    good, bad, later = "0123456789abcdef", "0123456789abcde0", "0123456789abcde1"
    async with store.store.test_context() as agent:
        await agent.put(job(question_id=good, answer="fine"), key=good)
        await agent.put(job(question_id=bad, answer="a\x00b"), key=bad)
        await agent.put(job(question_id=later, answer="next"), key=later)
        await sent.until(lambda: len(sent.to(topics.events)) == 2 and sent.to(topics.permanent))
    completed = {e.question_id for e in sent.to(topics.events) if e.stage == "completed"}
    assert completed == {good, later}
    (letter,) = sent.to(topics.permanent)
    assert letter.question_id == bad and letter.error_class == "rejected"
    assert "NUL" in letter.error_message and "refused to store the answer" in letter.error_message


async def test_dead_letters_store_a_refused_failure_escaped(sent, monkeypatch):
    """A dead letter carrying a NUL (written straight to a topic) still ends failed, its text escaped."""
    stored = []

    async def save(failures):
        if any("\x00" in f.question_text for f in failures):
            raise NUL_REFUSED
        stored.extend(failures)
        return list(failures)

    monkeypatch.setattr(storage, "save_failed", save)
    async with dead_letters.dead_letters.test_context() as agent:
        await agent.put(job(question_text="a\x00b", error_class="rejected", error_code=0, error_message="refused"),
                        key="0123456789abcdef")
        await sent.until(lambda: sent.to(topics.events))
    (failure,) = stored
    assert failure.question_text == "a\\x00b" and "stored escaped" in failure.error_message
    (failed,) = sent.to(topics.events)
    assert failed.stage == "failed"


# -- webhooks of ended questions ---------------------------------------------------------------

async def test_store_and_dead_letters_announce_the_questions_they_ended(sent, monkeypatch, no_webhook_targets):
    announced = []

    async def announce(kind, outcomes):
        announced.append((kind, [(qid, epoch, data.get("status", "completed")) for qid, epoch, data in outcomes]))

    monkeypatch.setattr(store, "announce_questions", announce)
    monkeypatch.setattr(dead_letters, "announce_questions", announce)
    monkeypatch.setattr(storage, "save_completed", AsyncMock(side_effect=lambda answers: list(answers)))
    monkeypatch.setattr(storage, "save_failed", AsyncMock(side_effect=lambda failures: list(failures)))
    monkeypatch.setattr(cache, "put_many", AsyncMock())
    await store.store_batch([job(answer="a", score=0.9, epoch=2)])
    await dead_letters.fail_batch([job(question_id="00000000000000bb", error_class="permanent", error_code=404,
                                       error_message="no model")])
    assert announced == [("question.completed", [(QID, 2, "completed")]),
                         ("question.failed", [("00000000000000bb", 1, "failed")])]


async def test_a_copy_delivered_while_the_first_is_at_the_llm_is_not_generated_twice(sent, monkeypatch):
    """After a rebalance Faust re-reads from the committed offset; the status table has not seen the first copy."""
    at_llm, release = asyncio.Event(), asyncio.Event()

    async def slow(question, seed, **kwargs):
        at_llm.set()
        await release.wait()
        return Generation("An answer.", "smollm2", 120.0, 3)

    call = AsyncMock(side_effect=slow)
    monkeypatch.setattr(llm, "generate", call)
    first = asyncio.create_task(generate.generate_one(job(), Lane.INTERACTIVE))
    await at_llm.wait()
    await generate.generate_one(job(), Lane.INTERACTIVE)  # the copy: returns at once
    assert call.await_count == 1
    release.set()
    await first
    assert len(sent.to(topics.success)) == 1 and not app.runtime.generating
    await generate.generate_one(job(attempt=2), Lane.INTERACTIVE)  # the next attempt is no copy
    assert call.await_count == 2
