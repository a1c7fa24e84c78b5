"""Access control decisions: scopes, which scope a route needs, who may do what, where a worker may listen.

Pure functions, so every rule is a table-driven unit test with no broker,
database or web server.  The web layer (:mod:`qastream.web.access`) applies
them to every request in one aiohttp middleware, so a route cannot be
forgotten: a path this table does not name needs ``admin``.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Optional


class Scope(StrEnum):
    """What a key may do; ``admin`` may do everything."""

    #: ``POST /query``, ``POST /batches``, cancelling (``DELETE``) the key's own questions and batches.
    SUBMIT = "submit"
    #: ``GET /status/{id}``, its live ``/events``, ``/answers/latest`` and ``GET /batches...``, for the key's own
    #: questions and batches.
    READ = "read"
    #: ``/metrics`` and ``/metrics/prometheus``.
    METRICS = "metrics"
    #: Every route (Faust's ``/table`` and ``/router`` views, every question).
    ADMIN = "admin"


class AuthMode(StrEnum):
    """``QASTREAM_AUTH``: whether requests need a key."""

    OFF = "off"
    REQUIRED = "required"


#: Routes anyone may call: liveness for orchestrators, the static dashboard page, the API description.
OPEN_ROUTES = frozenset({"/health", "/", "/dashboard", "/static/{name}", "/openapi.json"})

#: The scope each other qastream route needs.  Faust's ``/table`` and ``/router`` views are absent on
#: purpose: like any path not named here they need ``admin``.
ROUTE_SCOPES: dict[str, Scope] = {
    "/query": Scope.SUBMIT,
    "/status/{question_id}": Scope.READ,
    "/status/{question_id}/events": Scope.READ,
    "/answers/latest": Scope.READ,
    "/metrics": Scope.METRICS,
    "/metrics/prometheus": Scope.METRICS,
    "/batches": Scope.READ,
    "/batches/{batch_id}": Scope.READ,
    "/batches/{batch_id}/results": Scope.READ,
    "/query/{question_id}": Scope.SUBMIT,
}

#: Methods of a route that need another scope than its reading one: what changes something needs ``submit``.
METHOD_SCOPES: dict[tuple[str, str], Scope] = {
    ("/batches", "POST"): Scope.SUBMIT,
    ("/batches/{batch_id}", "DELETE"): Scope.SUBMIT,
}


#: Routes whose view may forward (or relay, for the live stream) to the worker owning the key, with the
#: client's headers: the owning worker charges the rate there (:func:`rate_charged_on_arrival`), so a
#: forwarded request costs its key one token, not one per hop.
FORWARDED_ROUTES = frozenset({"/status/{question_id}", "/status/{question_id}/events"})


def rate_charged_on_arrival(route: str) -> bool:
    """Whether the middleware charges a request on this route to its key's rate as it arrives.

    ``GET /status`` and its live stream are charged in the view, on the worker that answers them.
    Faust's own ``/table/{name}/{key}/`` (``admin``) also forwards; it is
    charged on both hops, as the view is Faust's.
    """
    return route not in FORWARDED_ROUTES


def required_scope(route: str, method: str = "GET") -> Optional[Scope]:
    """The scope a request on a route (its aiohttp canonical path) needs; ``None`` when it is open to anyone.

    Fails closed: a route added later and not named here needs ``admin``.
    """
    if route in OPEN_ROUTES:
        return None
    return METHOD_SCOPES.get((route, method.upper()), ROUTE_SCOPES.get(route, Scope.ADMIN))


def parse_scopes(text: str) -> frozenset[Scope]:
    """Comma-separated scope names (``submit,read``); ValueError naming what is wrong."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError(f"no scope given; choose from {', '.join(Scope)}")
    unknown = [name for name in names if name not in Scope.__members__.values()]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(map(repr, unknown))}; choose from {', '.join(Scope)}")
    return frozenset(Scope(name) for name in names)


def format_scopes(scopes: frozenset[Scope]) -> str:
    """Scopes as stored and shown: comma-separated in the enum's order, so equal sets read alike."""
    return ",".join(scope.value for scope in Scope if scope in scopes)


@dataclass(frozen=True)
class Limits:
    """A key's own limits: ``rate`` requests/s with bursts of ``burst`` (``None``: unlimited), and questions in flight."""

    rate: Optional[float] = None
    burst: Optional[int] = None
    max_in_flight: Optional[int] = None


def check_limits(rate: Optional[float], burst: Optional[int], max_in_flight: Optional[int]) -> Limits:
    """Validated limits; a rate without a burst gets one second's worth (at least 1).

    A burst without a rate would limit nothing, so it is refused rather than
    silently ignored.
    """
    if rate is not None and (not math.isfinite(rate) or rate <= 0):
        raise ValueError(f"--rate must be a positive number of requests per second, got {rate}")
    if burst is not None and rate is None:
        raise ValueError("--burst needs --rate: a burst is the bucket size of a rate limit")
    if burst is not None and burst < 1:
        raise ValueError(f"--burst must be at least 1, got {burst}")
    if max_in_flight is not None and max_in_flight < 1:
        raise ValueError(f"--max-in-flight must be at least 1, got {max_in_flight}")
    if rate is not None and burst is None:
        burst = max(1, math.ceil(rate))
    return Limits(rate, burst, max_in_flight)


@dataclass(frozen=True)
class Principal:
    """Who a request's key belongs to, with what it may do and its limits.

    ``name`` is what logs show; the key itself never leaves the request that
    carried it.  ``bucket`` names the key's rate-limit bucket: a prefix of
    the key's hash, because ids and names restart with each database and
    two deployments may share one Redis.
    """

    key_id: int
    name: str
    scopes: frozenset[Scope]
    limits: Limits = Limits()
    bucket: str = ""

    def allows(self, scope: Scope) -> bool:
        """Whether the key holds ``scope`` (``admin`` holds them all)."""
        return scope in self.scopes or Scope.ADMIN in self.scopes

    @property
    def sees_everything(self) -> bool:
        """Admin keys read every question; the others only the ones they asked."""
        return Scope.ADMIN in self.scopes


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the web server reachable from this machine only.

    Only ``localhost`` and loopback addresses count: an empty host or
    ``0.0.0.0`` listens on every interface, and any other name may resolve to
    a public address.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def bind_refusal(host: str, mode: AuthMode, allow_anonymous: bool) -> Optional[str]:
    """Why a worker must not start listening on ``host``, or ``None`` when it may.

    A worker reachable from other machines with no key required would hand
    the API (and Faust's table views) to anyone on the network; running that
    way has to be a decision, spelled out in a setting.
    """
    if mode == AuthMode.REQUIRED or allow_anonymous or is_loopback(host):
        return None
    return (f"the web server binds to {host!r} (QASTREAM_WEB_HOST), reachable from other machines, while "
            "QASTREAM_AUTH=off: "
            "set QASTREAM_AUTH=required (and create keys with `qastream keys create`), bind to 127.0.0.1, "
            "or set QASTREAM_AUTH_ALLOW_ANONYMOUS=true to serve without keys on purpose")
