"""``GET /health``: readiness, distinct from liveness.

The web server answers before table recovery has finished and during every
rebalance; a status read then may miss entries that are about to be
restored.  A worker whose broker, database or Redis does not answer cannot
accept questions either.  Orchestrators and tests wait for 200 here before
routing traffic.  Dependencies are probed in the background
(:mod:`qastream.services.health`), so this answers at once whatever they do.
"""

from __future__ import annotations

from typing import Any

from faust import web

from qastream.app import app, dependencies
from qastream.services.health import OK


def readiness() -> dict[str, bool]:
    """Which of the worker's own readiness conditions hold."""
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # TableManager has it, its interface does not
    return {
        "recovered": recovery.completed.is_set() and not app.in_recovery,
        "assigned": not app.rebalancing,
    }


def health_body(checks: dict[str, bool], states: dict[str, str], admission: dict[str, int]) -> dict[str, Any]:
    """The body of ``GET /health``: ready only when every condition holds; ``down`` names what does not."""
    down = [name for name, ok in checks.items() if not ok] + [name for name, state in states.items() if state != OK]
    return {"ready": not down, **checks, "dependencies": states, "down": down, "admission": admission}


@app.page("/health")
class HealthView(web.View):
    """200 when tables are recovered, no rebalance is in progress and every dependency answers, else 503."""

    async def get(self, request: web.Request) -> web.Response:
        body = health_body(readiness(), dependencies.states(), app.runtime.gate.snapshot())
        return self.json(body, status=200 if body["ready"] else 503)
