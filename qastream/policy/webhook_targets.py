"""Where a webhook may go: http(s) URLs whose host is a public address, or a host the operator allows.

A webhook makes the worker send a request to an address a client chose.
Without a check that is a way into the worker's own network (a database
port, a cloud metadata service at 169.254.169.254).  So a target is checked
twice: its syntax when it is submitted (:func:`check_url`, a 400 at once),
and every address its host resolves to when it is sent
(:func:`refused_address`, used by the resolver of
:class:`qastream.services.webhooks.WebhookClient`), because a name can
resolve elsewhere by then (DNS rebinding).  Redirects are not followed.

Hosts listed in ``QASTREAM_WEBHOOK_ALLOWED_HOSTS`` skip the address checks:
a receiver on the operator's own network (tests list ``127.0.0.1``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from qastream.errors import PermanentError

#: Longest URL accepted (the ``url`` column's width).
MAX_URL_CHARS = 2048
SCHEMES = frozenset({"http", "https"})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(PermanentError, ValueError):
    """A webhook target qastream will not send to; the message says why (a 400 at submission, a failed delivery later)."""


@dataclass(frozen=True)
class Target:
    """A checked webhook URL: its host (lower case, IPv6 without brackets) and port."""

    url: str
    host: str
    port: int


def parse_allowed_hosts(text: str) -> frozenset[str]:
    """``QASTREAM_WEBHOOK_ALLOWED_HOSTS``: comma-separated host names or addresses, normalised like a URL's host."""
    return frozenset(normal_host(part) for part in text.split(",") if part.strip())


def normal_host(host: str) -> str:
    """A host as compared with the allowed list: lower case, no brackets or trailing dot, IPs in canonical form."""
    bare = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare


def refused_address(address: Address) -> Optional[str]:
    """Why a webhook may not go to ``address``, or ``None`` when it is a public unicast address.

    An IPv4 address embedded in IPv6 (mapped ``::ffff:a.b.c.d``, 6to4,
    Teredo) is judged as that IPv4 address: the packets reach it.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            reason = refused_address(embedded)
            return f"{reason} (embedded in {address})" if reason else None
    for refused, what in ((address.is_unspecified, "unspecified"), (address.is_loopback, "loopback"),
                          (address.is_link_local, "link-local"), (address.is_multicast, "multicast"),
                          (address.is_private, "private"), (address.is_reserved, "reserved"),
                          (not address.is_global, "not globally routable")):
        if refused:
            return f"{address} is a {what} address"
    return None


def check_url(url: str, allowed_hosts: frozenset[str]) -> Target:
    """The :class:`Target` of ``url``, or :class:`TargetRefused` saying why not.

    Checked here: length, text a database and a request can carry, scheme, a
    host, no credentials, and a host that is not an address or name of this
    machine or a private network unless allowed.  A host name's addresses are checked when sending.
    """
    if len(url) > MAX_URL_CHARS:
        raise TargetRefused(f"webhook_url is longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise TargetRefused("webhook_url must not contain whitespace or control characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in url):
        # A lone surrogate JSON lets through: no UTF-8 encoder takes it, so the question's row (written in a
        # group commit with other clients' questions) or the delivery's request could not carry it.
        raise TargetRefused("webhook_url contains a lone surrogate: text must be valid Unicode")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"webhook_url is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise TargetRefused(f"webhook_url must be an http or https URL, not {parts.scheme or 'schemeless'!r}")
    if not parts.hostname:
        raise TargetRefused("webhook_url has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("webhook_url must not carry credentials: the X-Qastream-Signature header "
                            "authenticates qastream to the receiver")
    host = normal_host(parts.hostname)
    target = Target(url, host, port or (443 if parts.scheme.lower() == "https" else 80))
    if host in allowed_hosts:
        return target
    try:
        address: Optional[Address] = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        reason = refused_address(address)
        if reason:
            raise TargetRefused(f"webhook_url is refused: {reason}; list the host in "
                                "QASTREAM_WEBHOOK_ALLOWED_HOSTS to allow it")
    elif host == "localhost" or host.endswith(".localhost") or "." not in host:
        raise TargetRefused(f"webhook_url is refused: {host!r} is a local name; use a public host name or list "
                            "it in QASTREAM_WEBHOOK_ALLOWED_HOSTS")
    return target


def refused_resolution(host: str, addresses: list[str], allowed_hosts: frozenset[str]) -> Optional[str]:
    """Why ``host`` may not be sent to, given every address it resolved to; ``None`` when all are public.

    All of them, not the first: a resolver answering one public and one
    private address could otherwise send the connection to the private one.
    """
    if normal_host(host) in allowed_hosts:
        return None
    if not addresses:
        return f"{host} resolved to no address"
    for text in addresses:
        reason = refused_address(ipaddress.ip_address(text.split("%", 1)[0]))
        if reason:
            return f"{host} resolves to {reason}"
    return None
