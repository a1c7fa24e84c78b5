"""Access control for every route of a worker: one aiohttp middleware on Faust's web application.

A middleware sees every request the router matched, qastream's views and
Faust's own ``/table`` and ``/router`` views alike, so no route can be
left unprotected by forgetting a decorator: the scope a route needs comes
from :func:`qastream.policy.access.required_scope`, which answers ``admin``
for any route it does not name.  With ``QASTREAM_AUTH=off`` the middleware
passes every request on untouched.

The request's :class:`~qastream.policy.access.Principal` is left on the
request for the views that narrow what a key sees (:func:`principal_of`).
A ``GET /status`` that Faust forwards to the worker owning the question
carries the client's headers, so that worker checks the key again itself.

Refusals are logged with the key's name (never the key) at info level:
a client probing with wrong keys must not flood the log with warnings.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from aiohttp import web as aioweb
from aiohttp.typedefs import Handler

from qastream.app import app, limiter, settings, storage
from qastream.db.keys import Lookup
from qastream.errors import Unavailable
from qastream.policy.access import AuthMode, Principal, Scope, rate_charged_on_arrival, required_scope
from qastream.policy.admission import retry_after_header
from qastream.policy.keys import BadCredentials, bearer_token, could_be_key, hash_key
from qastream.web.admission import bounded

logger = logging.getLogger(__name__)

#: Where the middleware leaves the request's principal.
PRINCIPAL = "qastream.principal"
#: RFC 6750: a 401 names the scheme (and, for a key that was sent, that it is not valid).
CHALLENGE = 'Bearer realm="qastream"'
INVALID = 'Bearer realm="qastream", error="invalid_token"'


def principal_of(request: object) -> Optional[Principal]:
    """The key a request was authenticated with; ``None`` with access control off."""
    return request.get(PRINCIPAL) if isinstance(request, aioweb.BaseRequest) else None


def refusal(status: int, message: str, challenge: Optional[str] = None) -> aioweb.Response:
    """A 401/403 with a body like every other error of the API: ``{"error": ...}``."""
    headers = {"WWW-Authenticate": challenge} if challenge else {}
    return aioweb.json_response({"error": message}, status=status, headers=headers)


async def lookup(key_hash: str) -> Optional[Lookup]:
    """The key with this hash, from this worker's recent lookups or the database (bounded: 503 past it)."""
    cache = app.runtime.keys
    hit, found = cache.get(key_hash, time.monotonic())
    if not hit:
        async with bounded("database", settings.db_statement_timeout_seconds):
            found = await storage.key(key_hash)
        cache.put(key_hash, found, time.monotonic())
    return found


async def record_use(principal: Principal) -> None:
    """Move the key's ``last_used_at``, once a minute per key at most; a failure is logged and the request goes on."""
    now = time.time()
    if not app.runtime.keys.due_touch(principal.key_id, now):
        return
    try:
        async with bounded("database", settings.db_statement_timeout_seconds):
            await storage.touch_key(principal.key_id, now)
    except Exception as exc:
        logger.warning("recording a use of key %r failed: %r", principal.name, exc)


def describe(request: aioweb.Request) -> str:
    """A refused request as the log shows it: method, path and client, never its headers."""
    return f"{request.method} {request.path} from {request.remote}"


async def authenticate(request: aioweb.Request, scope: Scope) -> aioweb.Response | Principal:
    """The request's principal, or the response refusing it."""
    header = request.headers.get("Authorization")
    try:
        token = bearer_token(header)
    except BadCredentials as exc:
        logger.info("refused %s: %s", describe(request), exc)
        return refusal(401, str(exc), INVALID if header and header.strip() else CHALLENGE)
    try:
        found = await lookup(hash_key(token)) if could_be_key(token) else None
    except Unavailable as exc:
        return _unavailable(exc.message)
    except Exception as exc:
        logger.warning("looking up an API key for %s failed: %r", describe(request), exc)
        return _unavailable(f"temporarily unavailable: {type(exc).__name__}")
    if found is None:
        logger.info("refused %s: unknown API key", describe(request))
        return refusal(401, "unknown API key", INVALID)
    name = found.principal.name
    if found.revoked:
        logger.info("refused %s: key %r is revoked", describe(request), name)
        return refusal(401, f"API key {name!r} is revoked", INVALID)
    if not found.principal.allows(scope):
        logger.info("refused %s: key %r lacks the %s scope", describe(request), name, scope)
        return refusal(403, f"API key {name!r} lacks the {scope} scope this route needs")
    return found.principal


async def over_rate(principal: Principal) -> Optional[float]:
    """Seconds until the key may make another request, or ``None`` when this one is within its rate.

    The bucket lives in Redis when one is configured (shared by every
    worker), otherwise in this worker (:class:`qastream.services.limiter.Limiter`).
    """
    limits = principal.limits
    if limits.rate is None:
        return None
    return await limiter.take(principal.bucket, limits.rate, limits.burst or 1)


def rate_refused(what: str, principal: Principal, wait: float) -> tuple[dict[str, str], dict[str, str]]:
    """Log a request refused for its key's rate; the body and headers of its 429."""
    limits = principal.limits
    logger.info("refused %s: key %r is over its rate of %g/s", what, principal.name, limits.rate)
    body = {"error": f"API key {principal.name!r} is over its rate of {limits.rate:g} requests/s (bursts of "
                     f"{limits.burst}); retry after the Retry-After seconds"}
    return body, {"Retry-After": retry_after_header(wait)}


def _unavailable(message: str) -> aioweb.Response:
    """A 503 with Retry-After, as ``@guarded`` answers when the database does not."""
    return aioweb.json_response({"error": message}, status=503,
                                headers={"Retry-After": retry_after_header(settings.retry_after_seconds)})


@aioweb.middleware
async def access_control(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
    """Refuse a request whose route needs a scope its key does not hold; pass the rest on."""
    if settings.auth == AuthMode.OFF:
        return await handler(request)
    resource = request.match_info.route.resource
    # No resource: the router found no route (404) or no method (405); those answers reveal nothing.
    route = resource.canonical if resource is not None else None
    scope = required_scope(route, request.method) if route is not None else None
    if route is None or scope is None:
        return await handler(request)
    outcome = await authenticate(request, scope)
    if isinstance(outcome, aioweb.Response):
        return outcome
    if rate_charged_on_arrival(route):
        wait = await over_rate(outcome)
        if wait is not None:
            body, headers = rate_refused(describe(request), outcome, wait)
            return aioweb.json_response(body, status=429, headers=headers)
    request[PRINCIPAL] = outcome
    await record_use(outcome)
    return await handler(request)


# Installed as the module is discovered, like the views it guards: before the web server starts.
app.web.web_app.middlewares.append(access_control)  # type: ignore[attr-defined]  # the aiohttp driver has it
