"""Tokens and generation time this worker's LLM calls reported, by model and server.

``/metrics`` shows tokens per second per model and server from these sums
and Prometheus scrapes them as counters.  They are the worker's own, since it
started, so reading them costs the same whatever the database holds (DESIGN
§3, invariant 10); the database's totals of stored answers are in
:mod:`qastream.db.stats`.  Memory is one entry per (model, server) pair seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from qastream.policy.usage import NS_PER_MS

if TYPE_CHECKING:
    from qastream.services.llm import Generation


@dataclass
class TokenTotals:
    """Sums over the answered calls of one model on one server."""

    calls: int = 0
    prompt_tokens: int = 0
    eval_tokens: int = 0
    eval_seconds: float = 0.0
    load_seconds: float = 0.0

    def eval_rate(self) -> Optional[float]:
        """Generated tokens per second of generation time (Ollama's "eval rate"); ``None`` before any time."""
        return round(self.eval_tokens / self.eval_seconds, 2) if self.eval_seconds > 0 else None


@dataclass
class TokenCounts:
    """Token totals keyed by (model, server); held by :class:`qastream.runtime.Runtime`."""

    by_source: dict[tuple[str, str], TokenTotals] = field(default_factory=dict)

    def record(self, generation: "Generation") -> None:
        """Add one answered call."""
        totals = self.by_source.setdefault((generation.model, generation.server), TokenTotals())
        totals.calls += 1
        totals.prompt_tokens += generation.prompt_tokens
        totals.eval_tokens += generation.tokens
        totals.eval_seconds += generation.eval_ns / NS_PER_MS / 1000.0
        totals.load_seconds += generation.load_ns / NS_PER_MS / 1000.0

    def snapshot(self) -> list[dict[str, Any]]:
        """One entry per model and server, sorted, as ``/metrics`` shows them."""
        return [{"model": model, "server": server, "calls": t.calls, "prompt_tokens": t.prompt_tokens,
                 "eval_tokens": t.eval_tokens, "eval_seconds": round(t.eval_seconds, 3),
                 "load_seconds": round(t.load_seconds, 3), "eval_tokens_per_second": t.eval_rate()}
                for (model, server), t in sorted(self.by_source.items())]
