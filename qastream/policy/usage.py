"""Token and time accounting: what each generation cost, summed per question, and what was wasted.

Ollama reports, with every answer, the prompt tokens it evaluated, the
tokens it generated and how long generating and loading took.  A question
may take several generations (regenerations after a low score); the job
carries the running sums, plus the tokens of the current attempt and of the
best attempt so far, so that when the question ends the tokens of the
attempts whose answer was *not* kept are known: the wasted tokens.

Where an attempt becomes rejected follows the quality gate
(:mod:`qastream.policy.quality`): an answer that passes is kept and every
earlier attempt was rejected; when attempts run out (or the question is
cancelled between attempts) the best answer is kept and every other attempt
was rejected.  A tie-free rule either way: wasted = all tokens - the kept
attempt's tokens.

Pure functions returning the fields to ``derive`` a job with, so the agents
stay thin and the arithmetic is table-tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from qastream.models import Job
    from qastream.services.llm import Generation

NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Usage:
    """What the LLM spent on one question: the ``responses`` row's columns, the ``usage`` of a result.

    Tokens are summed over every generation of the question; ``wasted_tokens``
    are the prompt and generated tokens of the attempts whose answer was not
    kept; ``first_model`` wrote attempt 1 (the kept answer's model differing
    from it is an escalation, see ``qastream report``).
    """

    prompt_tokens: int = 0
    eval_tokens: int = 0
    eval_ms: float = 0.0
    load_ms: float = 0.0
    wasted_tokens: int = 0
    first_model: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of a result's ``usage``."""
        return {"prompt_tokens": self.prompt_tokens, "eval_tokens": self.eval_tokens,
                "eval_ms": round(self.eval_ms, 1), "load_ms": round(self.load_ms, 1),
                "wasted_tokens": self.wasted_tokens, "first_model": self.first_model}


def usage_of(job: "Job") -> Usage:
    """The usage a job has summed so far."""
    return Usage(prompt_tokens=job.prompt_tokens, eval_tokens=job.eval_tokens, eval_ms=job.eval_ms,
                 load_ms=job.load_ms, wasted_tokens=job.wasted_tokens, first_model=job.first_model)


def generation_tokens(generation: "Generation") -> int:
    """Prompt plus generated tokens of one call."""
    return generation.prompt_tokens + generation.tokens


def after_generation(job: "Job", generation: "Generation") -> dict[str, Any]:
    """The usage fields of ``job`` once ``generation`` answered its current attempt.

    ``first_model`` is set by attempt 1 (an error retry of attempt 1 that
    succeeds is still attempt 1) and carried by later attempts.
    """
    return {
        "prompt_tokens": job.prompt_tokens + generation.prompt_tokens,
        "eval_tokens": job.eval_tokens + generation.tokens,
        "eval_ms": job.eval_ms + generation.eval_ns / NS_PER_MS,
        "load_ms": job.load_ms + generation.load_ns / NS_PER_MS,
        "attempt_tokens": generation_tokens(generation),
        "first_model": generation.model if job.attempt == 1 else job.first_model,
    }


def total_tokens(job: "Job") -> int:
    """Prompt plus generated tokens of every generation of the question so far."""
    return job.prompt_tokens + job.eval_tokens


def wasted(job: "Job", kept_tokens: int) -> int:
    """Tokens of the attempts other than the kept one (never negative: old messages may lack counts)."""
    return max(0, total_tokens(job) - kept_tokens)
