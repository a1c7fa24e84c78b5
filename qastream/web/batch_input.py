"""Reading a ``POST /batches`` body: JSON or NDJSON, every line checked before anything is stored.

Each line is checked with :func:`qastream.web.requests.parse_query`, the very
check ``POST /query`` makes, so a question a batch accepts is one
``POST /query`` would accept, and a line it refuses is refused for the same
reason.  All lines are checked before any is stored: a batch with a bad line
is refused whole (400 listing every bad line) unless the client asked to
skip them (``?skip_invalid=true``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

from qastream.errors import RequestError
from qastream.policy.webhook_targets import MAX_URL_CHARS
from qastream.web.requests import QueryInput, decode_json, parse_query, unstorable

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")

#: Longest ``custom_id``: a client's key for its own rows, not a payload.
MAX_CUSTOM_ID_CHARS = 256
#: Largest ``metadata`` object, as JSON: a label for the batch, not a place to store data.
MAX_METADATA_CHARS = 8192
#: Bad lines named in a 400: enough to fix a file, not a second copy of it.
MAX_LISTED_ERRORS = 100


@dataclass(frozen=True)
class BatchLine:
    """A valid line: its number in the body (1-based), the client's id for it, the question."""

    line: int
    custom_id: Optional[str]
    query: QueryInput


@dataclass(frozen=True)
class LineError:
    """Why a line was refused."""

    line: int
    error: str


@dataclass
class BatchInput:
    """A checked batch body."""

    lines: list[BatchLine] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    webhook_url: Optional[str] = None
    metadata: Optional[dict[str, Any]] = None


def is_ndjson(content_type: str) -> bool:
    return content_type in NDJSON_TYPES


def parse_custom_id(payload: dict[str, Any]) -> Optional[str]:
    """The line's ``custom_id``: a string (numbers are taken as their text) or absent."""
    value = payload.get("custom_id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RequestError(400, "custom_id must be a string")
    text = str(value)
    if len(text) > MAX_CUSTOM_ID_CHARS:
        raise RequestError(400, f"custom_id is longer than {MAX_CUSTOM_ID_CHARS} characters")
    problem = unstorable("custom_id", text)
    if problem:
        raise RequestError(400, problem)
    return text


def check_line(number: int, payload: Any, max_chars: int) -> BatchLine | LineError:
    """One line checked as ``POST /query`` checks its body, plus its ``custom_id``."""
    try:
        query = parse_query(payload, max_chars)
        custom_id = parse_custom_id(payload)
    except RequestError as err:
        return LineError(number, err.message)
    return BatchLine(number, custom_id, query)


def check_webhook_url(value: Any) -> Optional[str]:
    """An http(s) URL with a host, or ``None``; 400 otherwise (whether it may be called is checked on delivery)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RequestError(400, "webhook_url must be a string")
    if len(value) > MAX_URL_CHARS:
        raise RequestError(400, f"webhook_url is longer than {MAX_URL_CHARS} characters")
    problem = unstorable("webhook_url", value)
    if problem:
        raise RequestError(400, problem)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError as exc:
        raise RequestError(400, f"webhook_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestError(400, "webhook_url must be an http:// or https:// URL with a host")
    return value


def check_metadata(value: Any) -> Optional[dict[str, Any]]:
    """A JSON object of at most :data:`MAX_METADATA_CHARS`, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RequestError(400, "metadata must be a JSON object")
    if len(json.dumps(value, ensure_ascii=True)) > MAX_METADATA_CHARS:
        raise RequestError(400, f"metadata is larger than {MAX_METADATA_CHARS} characters of JSON")
    return value


def ndjson_payloads(body: bytes) -> list[tuple[int, Any]]:
    """(line number, parsed line) of every non-blank line; a line that is not JSON is kept as its error."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(400, "body is not UTF-8 text") from None
    out: list[tuple[int, Any]] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            out.append((number, json.loads(raw)))
        except ValueError as exc:
            out.append((number, LineError(number, f"line is not valid JSON: {exc}")))
        except RecursionError:
            out.append((number, LineError(number, "line is nested too deeply to parse")))
    return out


def parse_batch(body: bytes, ndjson: bool, max_chars: int, max_questions: int,
                webhook_url: Optional[str] = None) -> BatchInput:
    """The checked batch: valid lines, bad lines, webhook and metadata.

    JSON bodies number their questions 1.. in array order; NDJSON bodies by
    line of the body (blank lines are skipped but counted, so a number
    points at the line in the file).  ``webhook_url`` is the query
    parameter, the only place an NDJSON body can name one; a JSON body's
    own field wins.
    """
    metadata = None
    if ndjson:
        payloads = ndjson_payloads(body)
    else:
        document = decode_json(body)
        if not isinstance(document, dict):
            raise RequestError(400, "body must be a JSON object with a questions array")
        questions = document.get("questions")
        if not isinstance(questions, list):
            raise RequestError(400, "questions must be an array of question objects")
        payloads = list(enumerate(questions, start=1))
        webhook_url = document.get("webhook_url", webhook_url)
        metadata = check_metadata(document.get("metadata"))
    if not payloads:
        raise RequestError(400, "the batch has no questions")
    if len(payloads) > max_questions:
        raise RequestError(413, f"the batch has {len(payloads)} questions, over the limit of {max_questions}")
    checked = BatchInput(webhook_url=check_webhook_url(webhook_url), metadata=metadata)
    for number, payload in payloads:
        outcome = payload if isinstance(payload, LineError) else check_line(number, payload, max_chars)
        if isinstance(outcome, LineError):
            checked.errors.append(outcome)
        else:
            checked.lines.append(outcome)
    return checked


def refusal_body(errors: list[LineError]) -> dict[str, Any]:
    """The 400 of a batch with bad lines: how many, and the first :data:`MAX_LISTED_ERRORS` of them."""
    return {"error": f"{len(errors)} line(s) of the batch are invalid; fix them or resubmit with "
                     "?skip_invalid=true to accept the batch without them",
            "invalid_lines": [{"line": e.line, "error": e.error} for e in errors[:MAX_LISTED_ERRORS]],
            "invalid_count": len(errors)}
