"""A qastream worker whose scorer raises for any batch holding an answer with FAULT_MARKER.

Test-only fault injection: production code has no switch for it.  Run as
``python scorer_fault_worker.py worker -l info`` with the usual environment.
"""

from __future__ import annotations

from typing import Any

from qastream.services.scorer import Scorer

FAULT_MARKER = "SCORERFAULT"
_score_now = Scorer._score_now


def failing_score_now(self: Any, candidates: list[str], references: list[str]) -> list[float]:
    if any(FAULT_MARKER in candidate for candidate in candidates):
        raise RuntimeError(f"injected scorer fault ({FAULT_MARKER})")
    return _score_now(self, candidates, references)


if __name__ == "__main__":
    Scorer._score_now = failing_score_now
    from qastream.app import main

    main()
