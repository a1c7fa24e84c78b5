"""API keys: making one, what the database keeps of it, and reading it from a request.

A key is ``qsk_`` and 256 random bits; the database keeps only its SHA-256.
With that much entropy a plain hash is enough (no salt, no slow KDF: nobody
can guess a key to test against the hash), and a lookup by hash on a unique
index replaces a comparison of secrets, so no timing leaks the key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Optional

from qastream.errors import PermanentError

PREFIX = "qsk_"
#: A key name: what logs, ``keys list`` and a rate limiter show instead of the key.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: RFC 6750's b64token: the only characters a bearer token may hold.
TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
#: Longer than any key qastream makes; a longer header is refused before it is hashed.
MAX_TOKEN_CHARS = 200


class BadCredentials(PermanentError, ValueError):
    """The request's Authorization header is missing or is not ``Bearer <key>``; the message says which."""


def new_key() -> str:
    """A fresh key: shown once to whoever creates it, never stored."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """What the database keeps of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    """A key name as given, or ValueError: 1-64 letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit."""
    if not NAME.fullmatch(name):
        raise ValueError(f"key name {name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


def bearer_token(header: Optional[str]) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; :class:`BadCredentials` otherwise.

    The reason never quotes the header: it may be someone's key sent wrongly.
    """
    if header is None or not header.strip():
        raise BadCredentials("an API key is required: send Authorization: Bearer <key>")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise BadCredentials("the Authorization header must use the Bearer scheme: Authorization: Bearer <key>")
    token = token.strip()
    if not token:
        raise BadCredentials("the Authorization header has no key after Bearer")
    if len(token) > MAX_TOKEN_CHARS:
        raise BadCredentials(f"the key in the Authorization header is longer than {MAX_TOKEN_CHARS} characters")
    if not token.isascii() or not TOKEN.fullmatch(token):
        raise BadCredentials("the key in the Authorization header holds characters no key has")
    return token
