"""qastream.devtools.llmserver.server with the echo backend: the Ollama HTTP API and its fault knobs."""

import asyncio
import json

import aiohttp
import pytest

from qastream.devtools.llmserver.backends import Completion
from qastream.devtools.llmserver.server import VERSION, Faults, durations

QUESTION = "What is Kafka?"


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def chat_body(content, *, model="smollm2", stream=False, system="Be brief."):
    return {"model": model, "stream": stream,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}]}


async def post(session, url, body):
    async with session.post(url, json=body) as response:
        return response.status, dict(response.headers), await response.read()


async def chat_status(session, base, content, **kwargs):
    status, _, _ = await post(session, f"{base}/api/chat", chat_body(content, **kwargs))
    return status


async def test_version(llm_server, session):
    _, base = await llm_server()
    async with session.get(f"{base}/api/version") as response:
        assert response.status == 200
        assert await response.json() == {"version": VERSION}


async def test_root_says_ollama_is_running(llm_server, session):
    _, base = await llm_server()
    async with session.get(f"{base}/") as response:
        assert (response.status, await response.text()) == (200, "Ollama is running")


@pytest.mark.parametrize("model, listed", [("smollm2", "smollm2:latest"), ("llama3.2:3b", "llama3.2:3b")])
async def test_tags_lists_the_model(llm_server, session, model, listed):
    _, base = await llm_server(model=model)
    async with session.get(f"{base}/api/tags") as response:
        assert response.status == 200
        models = (await response.json())["models"]
    assert [m["name"] for m in models] == [listed]
    assert models[0]["model"] == listed


@pytest.mark.parametrize("content, answer", [
    (QUESTION, QUESTION),
    ("  What is Kafka?  ", QUESTION),
    ("What is Kafka? [[fail:503*0]]", QUESTION),   # a marker is never part of the answer
    ("[[fail:mid*0]] What is Kafka?", QUESTION),
])
async def test_chat_non_stream_echoes_the_user_message(llm_server, session, content, answer):
    _, base = await llm_server()
    status, headers, raw = await post(session, f"{base}/api/chat", chat_body(content))
    assert status == 200
    body = json.loads(raw)
    assert body["message"] == {"role": "assistant", "content": answer}
    assert body["done"] is True and body["done_reason"] == "stop"
    assert body["model"] == "smollm2"
    assert body["eval_count"] == len(answer.split())
    assert body["prompt_eval_count"] == len("Be brief.".split() + answer.split()) and body["eval_duration"] > 0
    assert body["total_duration"] >= body["eval_duration"] and body["load_duration"] == 0
    assert headers["Content-Type"].startswith("application/json")


async def test_chat_answers_the_last_user_message(llm_server, session):
    _, base = await llm_server()
    body = {"model": "smollm2", "stream": False, "messages": [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"}]}
    _, _, raw = await post(session, f"{base}/api/chat", body)
    assert json.loads(raw)["message"]["content"] == "second"


@pytest.mark.parametrize("model", ["smollm2", "smollm2:latest"])
async def test_chat_accepts_the_model_with_or_without_tag(llm_server, session, model):
    _, base = await llm_server()
    assert await chat_status(session, base, QUESTION, model=model) == 200


async def test_chat_streaming_ndjson(llm_server, session):
    _, base = await llm_server()
    async with session.post(f"{base}/api/chat", json=chat_body("Kafka is a log", stream=True)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in (await response.text()).splitlines() if line]
    assert all(not line["done"] for line in lines[:-1])
    assert lines[-1]["done"] is True and lines[-1]["message"]["content"] == ""
    assert "".join(line["message"]["content"] for line in lines).strip() == "Kafka is a log"
    assert len(lines) == 4 + 1  # one chunk per word, then the final summary


async def test_chat_streams_by_default(llm_server, session):
    _, base = await llm_server()
    body = chat_body(QUESTION)
    del body["stream"]
    async with session.post(f"{base}/api/chat", json=body) as response:
        assert response.headers["Content-Type"] == "application/x-ndjson"
        assert len((await response.text()).splitlines()) == 4


@pytest.mark.parametrize("stream", [False, True])
async def test_generate(llm_server, session, stream):
    _, base = await llm_server()
    body = {"model": "smollm2", "prompt": "Why [[fail:503*0]] streams?", "system": "Be brief.", "stream": stream}
    async with session.post(f"{base}/api/generate", json=body) as response:
        assert response.status == 200
        lines = [json.loads(line) for line in (await response.text()).splitlines() if line]
    assert "message" not in lines[-1]
    assert lines[-1]["done"] is True
    assert "".join(line["response"] for line in lines).strip() == "Why  streams?"


@pytest.mark.parametrize("path, body", [
    ("/api/chat", chat_body(QUESTION, model="llama3.2")),
    ("/api/chat", chat_body(QUESTION, model="")),
    ("/api/generate", {"model": "nope", "prompt": QUESTION, "stream": False}),
])
async def test_unknown_model_is_404(llm_server, session, path, body):
    _, base = await llm_server()
    status, _, raw = await post(session, f"{base}{path}", body)
    assert status == 404
    assert json.loads(raw)["error"] == f"model '{body['model']}' not found"


@pytest.mark.parametrize("payload, status", [(b"{not json", 400), (b"[1, 2]", 400),
                                             (b'{"model": "smollm2", "messages": "hi"}', 400)])
async def test_bad_bodies_are_400(llm_server, session, payload, status):
    _, base = await llm_server()
    async with session.post(f"{base}/api/chat", data=payload) as response:
        assert response.status == status


async def test_marker_fails_exactly_n_calls(llm_server, session):
    _, base = await llm_server()
    content = "What is Kafka? [[fail:503*2]]"
    assert [await chat_status(session, base, content) for _ in range(4)] == [503, 503, 200, 200]
    # Another prompt with the same marker has its own count.
    assert await chat_status(session, base, "Other? [[fail:503*2]]") == 503


@pytest.mark.parametrize("marker, status", [("[[fail:404]]", 404), ("[[fail:500]]", 500), ("[[fail:400*1]]", 400)])
async def test_marker_statuses(llm_server, session, marker, status):
    _, base = await llm_server()
    assert await chat_status(session, base, f"q {marker}") == status


@pytest.mark.parametrize("content", ["What is Kafka? [[fail:404]]", "[[fail:503*2]] Why?", "x [[fail:mid]]"])
async def test_markers_are_plain_text_without_test_faults(llm_server, session, content):
    """The main job's server must not let a client dead-letter its own question by typing a marker."""
    _, base = await llm_server(faults=Faults())
    statuses = [await chat_status(session, base, content) for _ in range(3)]
    assert statuses == [200, 200, 200]
    status, _, raw = await post(session, f"{base}/api/chat", chat_body(content))
    assert json.loads(raw)["message"]["content"] == content.strip()


@pytest.mark.parametrize("retry_after, header", [(1.0, "1"), (7, "7"), (2.5, "2.5"), (None, None)])
async def test_429_marker_sends_retry_after(llm_server, session, retry_after, header):
    _, base = await llm_server(faults=Faults(retry_after=retry_after, markers=True))
    for _ in range(2):  # no count: every call fails
        status, headers, raw = await post(session, f"{base}/api/chat", chat_body("q [[fail:429]]"))
        assert status == 429
        assert headers.get("Retry-After") == header
        assert "rate limit" in json.loads(raw)["error"]


@pytest.mark.parametrize("faults, status", [
    (Faults(rate_503=1.0, seed=1), 503),
    (Faults(rate_429=1.0, seed=2), 429),
    (Faults(rate_404=1.0, seed=3), 404),
    (Faults(rate_503=0.0, rate_429=0.0, seed=4), 200),
])
async def test_fault_rates_of_one_always_fail(llm_server, session, faults, status):
    _, base = await llm_server(faults=faults)
    assert [await chat_status(session, base, f"q{i}") for i in range(5)] == [status] * 5


async def test_fault_draws_repeat_with_the_same_seed(llm_server, session):
    runs = []
    for _ in range(2):
        _, base = await llm_server(faults=Faults(rate_503=0.5, seed=42))
        runs.append([await chat_status(session, base, f"q{i}") for i in range(20)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 503}


async def test_mid_stream_fault_sends_an_error_line_inside_a_200_stream(llm_server, session):
    _, base = await llm_server()
    async with session.post(f"{base}/api/chat", json=chat_body("Kafka is a log [[fail:mid*1]]", stream=True)) as r:
        assert r.status == 200
        lines = [json.loads(line) for line in (await r.text()).splitlines() if line]
    assert lines[0]["message"]["content"] == "Kafka"
    assert "error" in lines[-1]


async def test_mid_stream_fault_without_streaming_is_a_json_error(llm_server, session):
    _, base = await llm_server()
    status, headers, raw = await post(session, f"{base}/api/chat", chat_body("q [[fail:mid]]", stream=False))
    assert 500 <= status <= 599
    assert "error" in json.loads(raw)


async def gather_statuses(session, base, n):
    return await asyncio.gather(*(chat_status(session, base, f"q{i}") for i in range(n)))


async def test_queue_full_answers_503(llm_server, session):
    server, base = await llm_server(latency=0.2, parallel=1, max_queue=1)
    statuses = await gather_statuses(session, base, 3)
    assert sorted(statuses) == [200, 200, 503]   # one served, one waits, one is turned away
    assert server.stats["error_503"] == 1


async def test_max_queue_zero_serves_one_and_rejects_the_concurrent_second(llm_server, session):
    _, base = await llm_server(latency=0.2, parallel=1, max_queue=0)
    statuses = await gather_statuses(session, base, 2)
    assert sorted(statuses) == [200, 503]


async def test_parallel_slots_serve_calls_at_once(llm_server, session):
    # No queue: a call that had to wait for a slot would be turned away (503), so three 200s
    # mean three calls served at once, on a machine of any speed.
    server, base = await llm_server(latency=0.3, parallel=3, max_queue=0)
    assert await gather_statuses(session, base, 3) == [200, 200, 200]
    assert server.stats["error_503"] == 0


async def test_admin_stats_count_completions_and_errors(llm_server, session):
    _, base = await llm_server()
    await chat_status(session, base, "a")
    await chat_status(session, base, "b [[fail:503*1]]")
    async with session.get(f"{base}/admin/stats") as response:
        stats = await response.json()
    assert (stats["received"], stats["completions"], stats["error_503"], stats["waiting"]) == (2, 1, 1, 0)


@pytest.mark.parametrize("completion, elapsed, expected", [
    # a backend that does not split its time: all of it is generation
    (Completion("a", 3, 5), 1000, {"total_duration": 1000, "load_duration": 0, "prompt_eval_duration": 0,
                                   "eval_duration": 1000}),
    # llama.cpp's split, and the load reported by the call that first used the model
    (Completion("a", 3, 5, prompt_ns=200, eval_ns=700, load_ns=5000), 1000,
     {"total_duration": 6000, "load_duration": 5000, "prompt_eval_duration": 200, "eval_duration": 700}),
    # prompt time only: generation is the rest
    (Completion("a", 3, 5, prompt_ns=300), 1000, {"total_duration": 1000, "load_duration": 0,
                                                  "prompt_eval_duration": 300, "eval_duration": 700}),
])
def test_durations_are_ollamas_fields_in_nanoseconds(completion, elapsed, expected):
    assert durations(completion, elapsed) == expected


async def test_a_fixed_answer_model_answers_with_its_text_and_is_counted(llm_server, session):
    server, base = await llm_server(fixed_answers={"big": "Always this."})
    status, _, raw = await post(session, f"{base}/api/chat", {**chat_body(QUESTION), "model": "big:latest"})
    assert status == 200 and json.loads(raw)["message"]["content"] == "Always this."
    status, _, raw = await post(session, f"{base}/api/chat", chat_body(QUESTION))
    assert status == 200 and json.loads(raw)["message"]["content"] == QUESTION  # the echo model still echoes
    assert (server.stats["completions:big:latest"], server.stats["completions:smollm2"]) == (1, 1)
    async with session.get(f"{base}/api/tags") as response:
        assert [m["name"] for m in (await response.json())["models"]] == ["smollm2:latest", "big:latest"]
