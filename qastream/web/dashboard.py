"""The dashboard: ``GET /dashboard`` (and ``/``), its static files, and ``GET /answers/latest``.

The page is plain HTML with a small hand-written script that polls
``/metrics`` and draws SVG charts, lists the latest batches (``GET /batches``)
with their progress and a Cancel button, and follows a question it submitted on
its live status stream (``GET /status/{id}/events``): nothing is fetched
from outside the worker (the machines running it may have no internet).

The page and its files need no key (``qastream.policy.access.OPEN_ROUTES``);
the data it fetches does when ``QASTREAM_AUTH=required``.  The script asks
for a key on the first 401, keeps it in ``sessionStorage`` only and sends it
as ``Authorization: Bearer``; a panel whose route needs a scope the key lacks
(a 403) names that scope, and the others keep working.

Faust serves a placeholder index (``{"status": "OK"}``) at ``/`` from its
production blueprint.  Views registered with ``app.page`` are added when this
module is discovered, before Faust applies its blueprints as the web server
starts, and aiohttp answers with the first route that matches: ``/`` is ours.
"""

from __future__ import annotations

from importlib import resources

from faust import web

from qastream.app import app, settings, storage
from qastream.db.recent import MAX_LATEST
from qastream.errors import RequestError
from qastream.web.access import principal_of
from qastream.web.admission import bounded
from qastream.web.requests import guarded

STATIC = resources.files("qastream.web") / "static"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
DEFAULT_LATEST = 20


def static_file(name: str) -> tuple[bytes, str]:
    """Bytes and content type of a file of the static folder; 404 for anything else."""
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    path = STATIC / name
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in CONTENT_TYPES or not path.is_file():
        raise RequestError(404, f"no static file {name!r}")
    return path.read_bytes(), CONTENT_TYPES[suffix]


def parse_limit(raw: str | None) -> int:
    """The ``limit`` query parameter: 1 to MAX_LATEST, 400 otherwise."""
    if raw is None or raw == "":
        return DEFAULT_LATEST
    try:
        limit = int(raw)
    except ValueError:
        raise RequestError(400, f"limit must be an integer, got {raw!r}") from None
    if not 1 <= limit <= MAX_LATEST:
        raise RequestError(400, f"limit must be between 1 and {MAX_LATEST}, got {limit}")
    return limit


@app.page("/")
class RootView(web.View):
    """``/`` sends browsers to the dashboard."""

    async def get(self, request: web.Request) -> web.Response:
        return self.text("see /dashboard\n", status=302, headers={"Location": "/dashboard"})


@app.page("/dashboard")
class DashboardView(web.View):
    """The live dashboard page."""

    async def get(self, request: web.Request) -> web.Response:
        body, _ = static_file("dashboard.html")
        return self.html(body.decode("utf-8"), headers={"Cache-Control": "no-cache"})


@app.page("/static/{name}")
class StaticView(web.View):
    """The dashboard's script and style sheet."""

    @guarded
    async def get(self, request: web.Request, name: str) -> web.Response:
        body, content_type = static_file(name)
        return self.bytes(body, content_type=content_type, headers={"Cache-Control": "no-cache"})


@app.page("/answers/latest")
class LatestAnswersView(web.View):
    """The most recently stored answers, newest first (``?limit=``, default 20); a key without admin sees its own."""

    @guarded
    async def get(self, request: web.Request) -> web.Response:
        limit = parse_limit(request.query.get("limit"))
        principal = principal_of(request)
        owner = principal.key_id if principal is not None and not principal.sees_everything else None
        async with bounded("database", settings.db_statement_timeout_seconds):
            answers = await storage.latest_answers(limit, owner)
        return self.json({"answers": answers})
