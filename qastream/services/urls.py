"""Service URLs as they may be shown: logs and messages never carry a password.

The compose stack gives Redis a password inside ``QASTREAM_REDIS_URL``
(``redis://:secret@redis:6379/0``); every place that names the server in a
log line or an error goes through :func:`redacted`.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***`` (user, host, port, path and query kept)."""
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:  # an unparsable URL is shown only by scheme: it may hold anything
        return url.split(":", 1)[0] + "://(unparsable URL)"
    if password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))
