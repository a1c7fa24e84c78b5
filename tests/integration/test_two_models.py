"""One embedded LLM server with both real models: SmolLM2-135M and Gemma 3 270M, each under its own name.

The unit tests route between fake backends; this one loads the two GGUF
files as ``qastream dev`` does (Gemma's assembled from its chunk packages)
and asks each model one short question through the Ollama API.  A few
tokens each (``num_predict`` 8): the point is that both load and answer, not
what they say.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from stackutil import ARTIFACTS

from qastream.devtools.embedded import free_port, log_file, start_llm_server, stop

MAX_TOKENS = 8


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def ask(base: str, model: str) -> tuple[int, dict[str, Any]]:
    return post(f"{base}/api/chat", {
        "model": model, "stream": False, "options": {"num_predict": MAX_TOKENS, "temperature": 0.0},
        "messages": [{"role": "system", "content": "Answer in one sentence."},
                     {"role": "user", "content": "What is a compiler?"}]})


# Loading both models takes seconds on a quiet machine; the bounds allow for a busy one.
@pytest.mark.timeout(300)
def test_one_server_answers_with_both_real_models():
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_llm_server("127.0.0.1", port, backend="smollm2,gemma3", model="smollm2,gemma3:270m",
                              extra=["--threads", "1"], log=log_file(str(ARTIFACTS), "llm-two-models"))
    try:
        with urllib.request.urlopen(f"{base}/api/tags", timeout=30) as response:
            listed = [m["name"] for m in json.loads(response.read())["models"]]
        assert listed == ["smollm2:latest", "gemma3:270m"]

        answers = {}
        for model in ("smollm2", "gemma3:270m"):
            status, body = ask(base, model)
            assert status == 200, body
            assert body["model"] == model and body["done"] is True
            assert body["message"]["content"].strip(), body
            assert 0 < body["eval_count"] <= MAX_TOKENS and body["prompt_eval_count"] > 0, body
            answers[model] = body["message"]["content"]
        # Two different models wrote them (greedy decoding: each model's answer is fixed).
        assert answers["smollm2"] != answers["gemma3:270m"], answers

        status, body = ask(base, "gemma3:1b")
        assert (status, body) == (404, {"error": "model 'gemma3:1b' not found"})
    finally:
        stop(server, "LLM server")
