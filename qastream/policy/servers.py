"""Which LLM server takes a call, and which model writes an attempt: pure decisions, table-tested.

A deployment may run several Ollama servers (``QASTREAM_OLLAMA_URL`` is a
comma-separated list).  Each has its own circuit breaker
(:class:`~qastream.policy.breaker.CircuitBreaker`): a server whose breaker is
open is drained for its cool-down while the others carry the load.  A call
goes to the least-busy server that may take it; a server the question just
failed on, or one that said it lacks the model, is chosen only when no other
may take the call (a retry goes elsewhere when it can; a lone server still
serves).

The model of an attempt is chosen here too: with
``QASTREAM_ESCALATION_MODEL`` set, a regeneration after a low score (attempt
2 and later) is written by the stronger model.  Retries after errors keep the
attempt number, so they keep the attempt's model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from qastream.policy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


@dataclass
class ServerHealth:
    """What one worker knows about one LLM server: its breaker and the models it answered 404 for."""

    url: str
    breaker: CircuitBreaker
    #: Model -> breaker-clock time until which the server is presumed to lack it (a 404 "model not found").
    missing: dict[str, float] = field(default_factory=dict)

    def lacks(self, model: str, now: float) -> bool:
        """Whether the server said it lacks ``model`` recently enough to go elsewhere first."""
        until = self.missing.get(model)
        if until is None:
            return False
        if now >= until:
            del self.missing[model]  # time to ask again: it may have been pulled meanwhile
            return False
        return True


@dataclass(frozen=True)
class Candidate:
    """One server as the selection sees it."""

    index: int
    #: Calls in flight or queued at this server from this worker.
    load: int
    #: Calls started there so far: among equally busy servers the least used goes first.
    calls: int
    #: Its breaker lets a call out now (closed, or a probe is due and not taken).
    available: bool
    #: Neither the server this question last failed on nor one that lacks the model.
    preferred: bool = True


def pick_server(candidates: Sequence[Candidate]) -> Optional[int]:
    """Index of the server that takes the next call, ``None`` when every breaker is open."""
    usable = [c for c in candidates if c.available]
    if not usable:
        return None
    preferred = [c for c in usable if c.preferred] or usable
    return min(preferred, key=lambda c: (c.load, c.calls, c.index)).index


def pool_state(states: Sequence[str]) -> str:
    """The breaker state of the LLM as a whole: closed while any server is closed, open when all are open.

    With one server it is that server's state, as before there were several.
    """
    if CLOSED in states:
        return CLOSED
    if HALF_OPEN in states:
        return HALF_OPEN
    return OPEN


def model_for(attempt: int, model: str, escalation_model: str) -> str:
    """The model that writes generation ``attempt`` (1-based) of a question.

    Attempt 2 and later exist only because the previous answer scored below
    the threshold (qastream.policy.quality): that is when the escalation
    model, if any, takes over.  An empty ``escalation_model`` keeps ``model``.
    """
    if attempt > 1 and escalation_model:
        return escalation_model
    return model
