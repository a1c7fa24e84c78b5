"""One embedded LLM server, several models: the request's ``model`` picks the backend, as in Ollama."""

import asyncio
import json
from typing import Any, Sequence

import aiohttp
import click
import pytest

from qastream.commands.llm_server import model_names, parse_backends, parse_fixed_answers
from qastream.devtools.llmserver.backends import (
    BackendName,
    Completion,
    EchoBackend,
    question_answer_prompt,
)
from qastream.devtools.llmserver.server import ServedModel, alias_table

QUESTION = "What is Kafka?"


class Labelled:
    """A fake backend whose answer says which backend wrote it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.calls = 0

    async def complete(self, messages: Sequence[dict[str, str]], options: dict[str, Any]) -> Completion:
        self.calls += 1
        return Completion(text=f"{self.label}: {messages[-1]['content']}", prompt_tokens=1, tokens=2)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def two_models(llm_server):
    small, large = Labelled("small"), Labelled("large")
    server, base = await llm_server(models=[ServedModel("smollm2", small), ServedModel("gemma3:270m", large)])
    return small, large, base


async def chat(session, base, model, content=QUESTION, path="/api/chat"):
    body = ({"model": model, "stream": False, "messages": [{"role": "user", "content": content}]}
            if path == "/api/chat" else {"model": model, "stream": False, "prompt": content})
    async with session.post(f"{base}{path}", json=body) as response:
        return response.status, json.loads(await response.read())


@pytest.mark.parametrize("model, label", [
    ("smollm2", "small"), ("smollm2:latest", "small"),
    ("gemma3:270m", "large"), ("gemma3", "large"), ("gemma3:latest", "large"),
])
async def test_the_model_field_picks_the_backend(two_models, session, model, label):
    small, large, base = two_models
    status, body = await chat(session, base, model)
    assert status == 200
    assert body["message"]["content"] == f"{label}: {QUESTION}"
    assert body["model"] == model   # Ollama answers with the name it was asked for
    assert (small.calls, large.calls) == ((1, 0) if label == "small" else (0, 1))


async def test_generate_routes_by_model_too(two_models, session):
    small, large, base = two_models
    status, body = await chat(session, base, "gemma3:270m", path="/api/generate")
    assert (status, body["response"], small.calls) == (200, f"large: {QUESTION}", 0)


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
@pytest.mark.parametrize("model", ["llama3.2", "gemma3:1b", "smollm2:360m", ""])
async def test_an_unknown_model_is_404_with_ollamas_message(two_models, session, path, model):
    small, large, base = two_models
    status, body = await chat(session, base, model, path=path)
    assert (status, body) == (404, {"error": f"model '{model}' not found"})
    assert small.calls == large.calls == 0


async def test_a_model_that_is_not_a_string_is_404(two_models, session):
    _, _, base = two_models
    async with session.post(f"{base}/api/chat", json={"model": ["smollm2"], "messages": []}) as response:
        assert response.status == 404


async def test_tags_list_every_served_model(two_models, session):
    _, _, base = two_models
    async with session.get(f"{base}/api/tags") as response:
        models = (await response.json())["models"]
    assert [(m["name"], m["details"]["family"]) for m in models] == [("smollm2:latest", "smollm2"),
                                                                    ("gemma3:270m", "gemma3")]


async def test_each_model_has_its_own_slots(llm_server, session):
    # One slot per model and no queue: a second call to the busy model is turned away (503) while a call
    # to the other model is served at once, whatever the machine's speed.
    server, base = await llm_server(parallel=1, max_queue=0, models=[
        ServedModel("smollm2", EchoBackend(0.5)), ServedModel("gemma3:270m", EchoBackend(0.5))])
    statuses = await asyncio.gather(chat(session, base, "smollm2"), chat(session, base, "gemma3:270m"))
    assert [status for status, _ in statuses] == [200, 200]
    statuses = await asyncio.gather(chat(session, base, "smollm2"), chat(session, base, "smollm2"))
    assert sorted(status for status, _ in statuses) == [200, 503]
    assert (server.stats["completions:smollm2"], server.stats["completions:gemma3:270m"]) == (2, 1)


@pytest.mark.parametrize("names, expected", [
    (["smollm2"], {"smollm2": "smollm2", "smollm2:latest": "smollm2"}),
    (["smollm2", "gemma3:270m"], {"smollm2": "smollm2", "smollm2:latest": "smollm2", "gemma3:270m": "gemma3:270m",
                                  "gemma3": "gemma3:270m", "gemma3:latest": "gemma3:270m"}),
    # Two tags of one family: the bare name would be a guess, so it reaches neither.
    (["gemma3:270m", "gemma3:1b"], {"gemma3:270m": "gemma3:270m", "gemma3:1b": "gemma3:1b"}),
    # A model's own name wins over another model's alias.
    (["gemma3", "gemma3:270m"], {"gemma3": "gemma3", "gemma3:latest": "gemma3", "gemma3:270m": "gemma3:270m"}),
])
def test_alias_table(names, expected):
    assert alias_table(names) == expected


@pytest.mark.parametrize("names", [["smollm2", "smollm2"], ["smollm2", "smollm2:latest"]])
def test_two_models_with_one_name_are_refused(names):
    with pytest.raises(ValueError, match="same name"):
        alias_table(names)


@pytest.mark.parametrize("value, expected", [
    ("smollm2", [BackendName.SMOLLM2]),
    ("smollm2,gemma3", [BackendName.SMOLLM2, BackendName.GEMMA3]),
    (" echo , gemma3 ", [BackendName.ECHO, BackendName.GEMMA3]),
])
def test_parse_backends(value, expected):
    assert parse_backends(None, None, value) == expected


@pytest.mark.parametrize("value", ["", "llama", "smollm2,smollm2", "smollm2,nope"])
def test_parse_backends_refuses(value):
    with pytest.raises(click.BadParameter):
        parse_backends(None, None, value)


@pytest.mark.parametrize("backends, models, expected", [
    # The first backend answers to QASTREAM_OLLAMA_MODEL, the others to their own names.
    ([BackendName.SMOLLM2], None, ["llama3.2"]),
    ([BackendName.SMOLLM2, BackendName.GEMMA3], None, ["llama3.2", "gemma3:270m"]),
    ([BackendName.ECHO, BackendName.ECHO], None, ["llama3.2", "echo"]),
    ([BackendName.SMOLLM2, BackendName.GEMMA3], "small, large", ["small", "large"]),
])
def test_model_names(backends, models, expected):
    assert model_names(backends, models, "llama3.2") == expected


@pytest.mark.parametrize("backends, models", [
    ([BackendName.SMOLLM2, BackendName.GEMMA3], "only-one"),
    ([BackendName.SMOLLM2, BackendName.GEMMA3], "a,"),
    ([BackendName.SMOLLM2, BackendName.GEMMA3], "same,same"),
    ([BackendName.GEMMA3], "gemma3:270m,extra"),
])
def test_model_names_refuses(backends, models):
    with pytest.raises(click.BadParameter):
        model_names(backends, models, "smollm2")


def test_question_answer_prompt_renders_a_chat_as_a_document_to_continue():
    messages = [{"role": "system", "content": "Be brief. "}, {"role": "user", "content": "What is a byte?"},
                {"role": "assistant", "content": "Eight bits."}, {"role": "user", "content": " What is a nibble?"}]
    assert question_answer_prompt(messages) == ("Be brief.\n\nQuestion: What is a byte?\nAnswer: Eight bits.\n\n"
                                                "Question: What is a nibble?\nAnswer:")
    assert question_answer_prompt([{"role": "user", "content": "Why?"}]) == "Question: Why?\nAnswer:"


@pytest.mark.parametrize("pairs, expected", [
    ((), {}), (("big=Always this.",), {"big": "Always this."}), (("big=a=b",), {"big": "a=b"}),
])
def test_parse_fixed_answers(pairs, expected):
    assert parse_fixed_answers(pairs) == expected


@pytest.mark.parametrize("pairs", [("big",), ("=text",), ("big=a", "big=b")])
def test_parse_fixed_answers_refuses(pairs):
    with pytest.raises(click.BadParameter):
        parse_fixed_answers(pairs)


def test_a_fixed_answer_model_may_not_take_a_served_name():
    with pytest.raises(click.BadParameter):
        model_names([BackendName.ECHO], None, "smollm2", also=["smollm2:latest"])
    assert model_names([BackendName.ECHO], None, "smollm2", also=["big-model"]) == ["smollm2"]
