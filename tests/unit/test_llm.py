"""qastream.services.llm: the Ollama client against the embedded echo server, and its error classes."""

import asyncio
import socket

import pytest

from qastream.devtools.llmserver.server import Faults
from qastream.errors import LLM_CALL_ERRORS, ErrorClass
from qastream.services.llm import Generation, LLMClient


@pytest.fixture
async def make_client():
    clients = []

    async def make(url, model="smollm2", timeout=5):
        client = LLMClient(url, model, timeout=timeout, concurrency=4, max_tokens=50, temperature=0.0)
        await client.start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.stop()


async def failure(client, question):
    with pytest.raises(LLM_CALL_ERRORS) as info:
        await client.generate(question)
    return info.value


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_success_returns_the_echoed_text(llm_server, make_client):
    _, url = await llm_server()
    client = await make_client(url)
    generation = await client.generate("  What is Kafka?  ")
    assert isinstance(generation, Generation)
    assert (generation.text, generation.model, generation.tokens) == ("What is Kafka?", "smollm2", 3)
    assert generation.latency_ms > 0
    assert (client.calls, client.in_flight, client.failures) == (1, 0, {})


async def test_success_carries_the_servers_counts_and_durations(llm_server, make_client):
    _, url = await llm_server()
    client = await make_client(url)
    generation = await client.generate("What is Kafka?")
    # The echo backend counts words: the system prompt and the question; the answer is the question.
    assert generation.tokens == 3 and generation.prompt_tokens > 3
    assert generation.eval_ns > 0 and generation.total_ns >= generation.eval_ns and generation.load_ns == 0
    assert generation.server == url


async def test_503_is_overload(llm_server, make_client):
    _, url = await llm_server(faults=Faults(rate_503=1.0, seed=0))
    client = await make_client(url)
    err = await failure(client, "What is Kafka?")
    assert (err.error_class, err.status_code, err.retry_after) == (ErrorClass.OVERLOAD, 503, None)
    assert "server busy" in err.message
    assert client.failures == {ErrorClass.OVERLOAD: 1}
    assert client.in_flight == 0


async def test_503_then_success(llm_server, make_client):
    _, url = await llm_server()
    client = await make_client(url)
    question = "What is Kafka? [[fail:503*2]]"
    for _ in range(2):
        assert (await failure(client, question)).status_code == 503
    assert (await client.generate(question)).text == "What is Kafka?"
    assert (client.calls, client.failures) == (3, {ErrorClass.OVERLOAD: 2})


@pytest.mark.parametrize("server_retry_after, parsed", [(7, 7.0), (2.5, 2.5), (None, None)])
async def test_429_is_quota_with_retry_after(llm_server, make_client, server_retry_after, parsed):
    _, url = await llm_server(faults=Faults(retry_after=server_retry_after, markers=True))
    client = await make_client(url)
    err = await failure(client, "What is Kafka? [[fail:429]]")
    assert (err.error_class, err.status_code, err.retry_after) == (ErrorClass.QUOTA, 429, parsed)


async def test_retry_after_of_one_call_does_not_leak_into_another(llm_server, make_client):
    _, url = await llm_server(faults=Faults(retry_after=7, markers=True))
    client = await make_client(url)
    quota, overload = await asyncio.gather(failure(client, "a [[fail:429]]"), failure(client, "b [[fail:503]]"))
    assert (quota.retry_after, overload.retry_after) == (7.0, None)


async def test_unknown_model_is_permanent(llm_server, make_client):
    _, url = await llm_server()
    client = await make_client(url, model="llama3.2")
    err = await failure(client, "What is Kafka?")
    assert (err.error_class, err.status_code) == (ErrorClass.PERMANENT, 404)
    assert "not found" in err.message


async def test_500_is_overload(llm_server, make_client):
    _, url = await llm_server()
    client = await make_client(url)
    err = await failure(client, "q [[fail:500*1]]")
    assert (err.error_class, err.status_code) == (ErrorClass.OVERLOAD, 500)


async def test_mid_stream_error_is_overload(llm_server, make_client):
    _, url = await llm_server()
    client = await make_client(url)
    err = await failure(client, "What is Kafka? [[fail:mid]]")
    assert err.error_class == ErrorClass.OVERLOAD
    assert err.status_code == -1 or 500 <= err.status_code <= 599


async def test_connection_refused_is_overload_with_status_0(make_client):
    client = await make_client(f"http://127.0.0.1:{unused_port()}")
    err = await failure(client, "What is Kafka?")
    assert (err.error_class, err.status_code, err.retry_after) == (ErrorClass.OVERLOAD, 0, None)


async def test_client_timeout_is_overload(llm_server, make_client):
    server, url = await llm_server(latency=0.6)
    client = await make_client(url, timeout=0.2)
    err = await failure(client, "What is Kafka?")
    assert server.stats["completions"] == 0  # the client gave up before the answer existed
    assert (err.error_class, err.status_code) == (ErrorClass.OVERLOAD, 0)
    assert "Timeout" in err.message


async def test_concurrency_bounds_calls_in_flight(llm_server, make_client):
    server, url = await llm_server(latency=0.1, parallel=16)
    client = await make_client(url)  # concurrency=4
    peak = 0

    async def watch():
        nonlocal peak
        while True:
            peak = max(peak, client.in_flight)
            await asyncio.sleep(0.005)

    watcher = asyncio.ensure_future(watch())
    try:
        answers = await asyncio.gather(*(client.generate(f"q{i}") for i in range(10)))
    finally:
        watcher.cancel()
    assert [a.text for a in answers] == [f"q{i}" for i in range(10)]
    assert peak == 4
    assert (await client.info())["calls"] == 10
