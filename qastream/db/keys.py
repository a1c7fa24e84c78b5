"""The statements on ``api_keys``: create, list, revoke, and the lookup every authenticated request makes.

Only the SHA-256 of a key reaches these functions (:func:`qastream.policy.keys.hash_key`);
nothing here can store or return a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import Connection, Table, and_, or_, select, update

from qastream.db.queries import to_datetime, to_seconds
from qastream.db.schema import ApiKeyRow
from qastream.errors import PermanentError
from qastream.policy.access import Limits, Principal, Scope, format_scopes, parse_scopes

K: Table = ApiKeyRow.__table__  # type: ignore[assignment]  # declarative tables are Tables

#: ``last_used_at`` moves at most this often per key: a write per request would cost more than the request.
TOUCH_SECONDS = 60.0


class KeyExists(PermanentError, ValueError):
    """A key with this name exists already (revoked or not: names are never reused, so logs stay unambiguous)."""


@dataclass(frozen=True)
class KeyInfo:
    """A key as ``qastream keys list`` shows it: everything but the hash."""

    name: str
    scopes: str
    limits: Limits
    created_at: float
    last_used_at: Optional[float]
    revoked_at: Optional[float]


@dataclass(frozen=True)
class Lookup:
    """What the database holds for a key hash: its principal and whether it is revoked."""

    principal: Principal
    revoked: bool


def _seconds(value: Optional[datetime]) -> Optional[float]:
    return None if value is None else to_seconds(value)


def _limits(row: Any) -> Limits:
    return Limits(row.rate, row.burst, row.max_in_flight)


def create(connection: Connection, name: str, key_hash: str, scopes: frozenset[Scope], limits: Limits, now: float) -> None:
    """Insert a key; :class:`KeyExists` when the name is taken."""
    if connection.execute(select(K.c.id).where(K.c.name == name)).first() is not None:
        raise KeyExists(f"a key named {name!r} exists already (names are not reused, even after revocation)")
    connection.execute(K.insert().values(
        name=name, key_hash=key_hash, scopes=format_scopes(scopes), rate=limits.rate, burst=limits.burst,
        max_in_flight=limits.max_in_flight, created_at=to_datetime(now)))


def listing(connection: Connection) -> list[KeyInfo]:
    """Every key, oldest first, without its hash."""
    rows = connection.execute(select(K.c.name, K.c.scopes, K.c.rate, K.c.burst, K.c.max_in_flight, K.c.created_at,
                                     K.c.last_used_at, K.c.revoked_at).order_by(K.c.id))
    return [KeyInfo(r.name, r.scopes, _limits(r), to_seconds(r.created_at), _seconds(r.last_used_at),
                    _seconds(r.revoked_at)) for r in rows]


def revoke(connection: Connection, name: str, now: float) -> Optional[float]:
    """Revoke the key named ``name``; returns when it was revoked (earlier, if it already was), ``None`` if unknown."""
    connection.execute(update(K).where(and_(K.c.name == name, K.c.revoked_at.is_(None)))
                       .values(revoked_at=to_datetime(now)))
    revoked = connection.execute(select(K.c.revoked_at).where(K.c.name == name)).first()
    return None if revoked is None else to_seconds(revoked.revoked_at)


#: Hex digits of a key's hash that name its rate-limit bucket (128 bits: no two keys share one).
BUCKET_CHARS = 32


def lookup(connection: Connection, key_hash: str) -> Optional[Lookup]:
    """The key with this hash (one row read through ``ix_api_keys_key_hash``), or ``None``."""
    row = connection.execute(select(K.c.id, K.c.name, K.c.scopes, K.c.rate, K.c.burst, K.c.max_in_flight,
                                    K.c.revoked_at).where(K.c.key_hash == key_hash)).first()
    if row is None:
        return None
    principal = Principal(row.id, row.name, parse_scopes(row.scopes), _limits(row), bucket=key_hash[:BUCKET_CHARS])
    return Lookup(principal, row.revoked_at is not None)


def touch(connection: Connection, key_id: int, now: float) -> None:
    """Set ``last_used_at`` unless it moved within :data:`TOUCH_SECONDS` (by this worker or another)."""
    connection.execute(update(K).where(and_(
        K.c.id == key_id,
        or_(K.c.last_used_at.is_(None), K.c.last_used_at < to_datetime(now - TOUCH_SECONDS))))
        .values(last_used_at=to_datetime(now)))
