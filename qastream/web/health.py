"""``GET /health``: readiness, distinct from liveness.

The web server answers before table recovery has finished and during every
rebalance; a status read then may miss entries that are about to be
restored.  Orchestrators and tests wait for 200 here before routing traffic.
"""

from __future__ import annotations

from faust import web

from qastream.app import app


def readiness() -> dict[str, bool]:
    """Which of the readiness conditions hold."""
    recovery = app.tables.recovery
    return {
        "recovered": recovery.completed.is_set() and not app.in_recovery,
        "assigned": not app.rebalancing,
    }


@app.page("/health")
class HealthView(web.View):
    """200 when tables are recovered and no rebalance is in progress, else 503."""

    async def get(self, request: web.Request) -> web.Response:
        checks = readiness()
        ready = all(checks.values())
        return self.json({"ready": ready, **checks}, status=200 if ready else 503)
