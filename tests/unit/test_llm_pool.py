"""qastream.services.llm_pool: routing over real echo servers, breakers per server, the 404 fallback."""

from __future__ import annotations

import asyncio
import socket

import pytest

from qastream.errors import LLM_CALL_ERRORS, ErrorClass
from qastream.policy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from qastream.policy.servers import ServerHealth
from qastream.services.llm_pool import LLMPool


def unused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
async def make_pool():
    pools = []

    async def make(urls, model="smollm2", threshold=2, cooldown=30.0):
        pool = LLMPool(urls, model, timeout=5, concurrency=4, max_tokens=50, temperature=0.0,
                       missing_model_seconds=60.0)
        servers = tuple(ServerHealth(url, CircuitBreaker(threshold, cooldown, cooldown)) for url in urls)
        pool.health = lambda: servers
        await pool.start()
        pools.append(pool)
        return pool, servers

    yield make
    for pool in pools:
        await pool.stop()


async def test_calls_are_spread_over_the_servers_by_load(llm_server, make_pool):
    (a, url_a), (b, url_b) = await llm_server(latency=0.05), await llm_server(latency=0.05)
    pool, _ = await make_pool([url_a, url_b])
    answers = await asyncio.gather(*(pool.generate(f"Question {i}?") for i in range(8)))
    assert {g.server for g in answers} == {url_a, url_b}
    assert (a.stats["completions"], b.stats["completions"]) == (4, 4)  # each call went to the least busy
    info = await pool.info()
    assert info["calls"] == 8 and [s["calls"] for s in info["servers"]] == [4, 4]
    assert info["concurrency"] == 8 and info["servers"][0]["breaker"]["state"] == CLOSED


async def test_a_dead_server_opens_its_breaker_and_the_other_carries_the_load(llm_server, make_pool):
    _, alive = await llm_server()
    dead = unused_url()
    pool, (dead_health, alive_health) = await make_pool([dead, alive], threshold=2)
    failures = []
    for _ in range(2):  # the first calls go to the dead server (listed first, idle): its breaker opens
        with pytest.raises(LLM_CALL_ERRORS) as info:
            await pool.generate("Q?", avoid=alive)
        failures.append(info.value)
    assert [(f.server, f.error_class, f.outage) for f in failures] == [
        (dead, ErrorClass.OVERLOAD, False), (dead, ErrorClass.OVERLOAD, True)]
    assert dead_health.breaker.state == OPEN and alive_health.breaker.state == CLOSED
    # Drained: every call goes to the live server now, even one that would rather avoid it.
    for _ in range(5):
        assert (await pool.generate("Q?", avoid=alive)).server == alive
    assert pool.up() and pool.breaker_state() == CLOSED and pool.wait_time() == 0.0
    info = await pool.info()
    assert info["servers"][0]["failures_by_class"] == {"overload": 2}
    assert info["servers"][0]["breaker"]["entered"] == {OPEN: 1}


async def test_a_retry_goes_to_another_server_than_the_one_it_failed_on(llm_server, make_pool):
    (_, url_a), (_, url_b) = await llm_server(), await llm_server()
    pool, _ = await make_pool([url_a, url_b])
    assert (await pool.generate("Q?", avoid=url_a)).server == url_b
    assert (await pool.generate("Q?", avoid=url_b)).server == url_a


async def test_every_breaker_open_is_an_outage_failure_of_no_server(make_pool):
    pool, servers = await make_pool([unused_url(), unused_url()], threshold=1)
    for server in servers:
        server.breaker.record_failure()
    assert not pool.up() and pool.breaker_state() == OPEN and pool.wait_time() > 0
    assert pool.take_probe() is None  # no cool-down is over
    with pytest.raises(LLM_CALL_ERRORS) as info:
        await pool.generate("Q?")
    assert (info.value.error_class, info.value.outage, info.value.server) == (ErrorClass.OVERLOAD, True, None)


async def test_with_every_server_down_one_question_carries_the_probe_and_its_success_closes_the_breaker(
        llm_server, make_pool):
    _, url = await llm_server()
    pool, (health,) = await make_pool([url], threshold=1, cooldown=0.05)
    health.breaker.record_failure()
    await asyncio.sleep(0.06)
    probe = pool.take_probe()
    assert probe == 0 and pool.take_probe() is None  # one probe at a time
    pool.release(probe)                              # its question was cancelled: the next may probe
    probe = pool.take_probe()
    assert probe == 0
    assert (await pool.generate("Q?", probe=probe)).server == url
    assert pool.up() and health.breaker.entered == {OPEN: 1, HALF_OPEN: 1, CLOSED: 1}


async def test_a_model_missing_on_one_server_is_answered_by_another(llm_server, make_pool):
    lacking, url_lacking = await llm_server(model="other")
    having, url_having = await llm_server()
    pool, (lacking_health, _) = await make_pool([url_lacking, url_having])
    generation = await pool.generate("Q?")
    assert generation.server == url_having and generation.model == "smollm2"
    assert lacking.stats["error_404"] == 1 and "smollm2" in lacking_health.missing
    assert lacking_health.breaker.state == CLOSED  # it answered: it is up
    await pool.generate("Q?")  # the server that lacks the model is passed over now
    assert lacking.stats["received"] == 1 and having.stats["completions"] == 2


async def test_a_model_no_server_has_is_a_permanent_404(llm_server, make_pool):
    (a, url_a), (b, url_b) = await llm_server(model="other"), await llm_server(model="another")
    pool, _ = await make_pool([url_a, url_b])
    with pytest.raises(LLM_CALL_ERRORS) as info:
        await pool.generate("Q?")
    assert (info.value.error_class, info.value.status_code) == (ErrorClass.PERMANENT, 404)
    assert a.stats["error_404"] == 1 and b.stats["error_404"] == 1  # each server was asked once


async def test_the_model_asked_for_is_the_one_that_answers(llm_server, make_pool):
    server, url = await llm_server(fixed_answers={"big": "A fixed answer."})
    pool, _ = await make_pool([url])
    generation = await pool.generate("Q?", model="big")
    assert (generation.model, generation.text) == ("big", "A fixed answer.")
    assert server.stats["completions:big"] == 1
