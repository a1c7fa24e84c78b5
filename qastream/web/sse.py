"""Server-Sent Events framing (the WHATWG HTML ``text/event-stream`` format), as bytes ready to write.

An event is ``event:``, ``id:`` and ``data:`` lines ended by a blank line;
a line starting with ``:`` is a comment, which clients ignore and which
keeps an idle connection from being closed by a proxy.  Pure functions, so
the framing is tested without a server.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

CONTENT_TYPE = "text/event-stream"

#: Headers of every stream: never cached, and not buffered by nginx (``X-Accel-Buffering``), which would
#: otherwise hold events back until its buffer fills.
HEADERS = {"Content-Type": f"{CONTENT_TYPE}; charset=utf-8", "Cache-Control": "no-cache",
           "X-Accel-Buffering": "no"}

#: The keep-alive: a comment line, which clients skip.
PING = b": ping\n\n"


def _field(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an SSE {name} cannot hold a line break")
    return f"{name}: {value}\n"


def event(name: str, event_id: str, data: Mapping[str, Any]) -> bytes:
    """One event whose ``data`` is JSON on a single line (``json.dumps`` escapes every line break)."""
    return (_field("event", name) + _field("id", event_id) + _field("data", json.dumps(data, separators=(",", ":")))
            + "\n").encode("utf-8")

