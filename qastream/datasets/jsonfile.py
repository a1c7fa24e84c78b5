"""JSON data sets: one array of objects, or JSON Lines (one object per line).

Exports of earlier runs and hand-made reference sets come in both shapes;
the first non-blank character tells which.  Field names are the seed
system's (``question_text``, ``original_answer``) or the plain ones
(``question``, ``answer``).  :func:`read_objects` is shared with the
migration import, which reads more fields from the same objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from qastream.datasets.records import BadRows, Record

QUESTION_FIELDS = ("question_text", "question")
#: ``original_answer`` first: in the seed's exports ``answer`` can be the LLM's answer.
ANSWER_FIELDS = ("original_answer", "reference_answer", "answer")
ID_FIELDS = ("id", "question_id")
CATEGORY_FIELDS = ("category", "class", "topic")

_decoder = json.JSONDecoder()


def first_of(obj: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    """The value of the first of ``names`` present and not null."""
    for name in names:
        value = obj.get(name)
        if value is not None:
            return value
    return None


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _array_items(text: str, name: str, bad: BadRows) -> Iterator[tuple[str, Any]]:
    """Elements of a JSON array one by one, so a broken element costs only the rest, not what came before."""
    at = _skip_space(text, text.index("[") + 1)
    number = 0
    if at < len(text) and text[at] == "]":
        return
    while at < len(text):
        number += 1
        where = f"{name}[{number - 1}]"
        try:
            value, at = _decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            bad.add("invalid JSON (the rest of the array is unreadable)", f"{where}: {exc.msg}")
            return
        yield where, value
        at = _skip_space(text, at)
        if at < len(text) and text[at] == ",":
            at = _skip_space(text, at + 1)
        elif at < len(text) and text[at] == "]":
            return
        else:
            bad.add("invalid JSON (the rest of the array is unreadable)", f"{where}: expected ',' or ']'")
            return
    bad.add("invalid JSON (the array is not closed)", name)


def read_objects(path: str | Path, bad: BadRows) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, object)`` for each JSON object of an array file or a JSON Lines file."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace") as handle:
        head = handle.read(4096)
        stripped = head.lstrip("\ufeff \t\r\n")
        if stripped.startswith("["):
            items: Iterator[tuple[str, Any]] = _array_items(head + handle.read(), path.name, bad)
        else:
            handle.seek(0)
            items = _lines(handle, path.name, bad)
        for where, value in items:
            if not isinstance(value, dict):
                bad.add(f"not a JSON object ({type(value).__name__})", where)
                continue
            yield where, value


def _lines(handle: Any, name: str, bad: BadRows) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(handle, 1):
        line = line.strip().lstrip("\ufeff")
        if not line:
            continue
        where = f"{name}:{number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as exc:
            bad.add("invalid JSON line", f"{where}: {exc.msg}")


def _text(value: Any) -> Optional[str]:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def read_json(path: str | Path, bad: BadRows) -> Iterator[Record]:
    """Records of a JSON array or JSON Lines file."""
    for where, obj in read_objects(path, bad):
        raw_question = first_of(obj, QUESTION_FIELDS)
        raw_answer = first_of(obj, ANSWER_FIELDS)
        if raw_question is None:
            bad.add("no question_text or question field", where)
            continue
        question, answer = _text(raw_question), _text(raw_answer)
        if question is None:
            bad.add("question is empty or not a string", where)
            continue
        if raw_answer is None:
            bad.add("no original_answer or answer field", where)
            continue
        if answer is None:
            bad.add("answer is empty or not a string", where)
            continue
        ident, category = first_of(obj, ID_FIELDS), first_of(obj, CATEGORY_FIELDS)
        yield Record(question=question, answer=answer, id=None if ident is None else str(ident),
                     category=None if category is None else str(category))
