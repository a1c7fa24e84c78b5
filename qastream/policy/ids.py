"""Question identity: the key of every topic, table, cache entry and row.

The same question typed with different spacing must land on the same key, or
the cache misses and the pipeline answers it twice.
"""

from __future__ import annotations

import hashlib
import re

_WHITESPACE = re.compile(r"\s+")
ID_LENGTH = 16
_ID_PATTERN = re.compile(rf"[0-9a-f]{{{ID_LENGTH}}}")


def normalise(text: str) -> str:
    """Collapse runs of whitespace to one space and trim the ends."""
    return _WHITESPACE.sub(" ", text).strip()


def question_id(text: str) -> str:
    """First 16 hex digits of SHA-256 of the normalised question text."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:ID_LENGTH]


def generation_seed(question_id: str, epoch: int, attempt: int) -> int:
    """Sampling seed of one generation: the same attempt reproduces, a regeneration differs.

    A fixed seed made every regeneration repeat the failed answer word for
    word (32 of 33 in the first real run, docs/quality.md).
    """
    digest = hashlib.sha256(f"{question_id}:{epoch}:{attempt}".encode()).hexdigest()
    return int(digest[:8], 16)


def is_question_id(value: str) -> bool:
    """True when ``value`` has the shape of a question id."""
    return bool(_ID_PATTERN.fullmatch(value))
