"""dictd dictionaries (Debian's ``dict-foldoc`` and ``dict-jargon``) as questions and answers.

A dictd dictionary is an ``.index`` file of ``headword<TAB>offset<TAB>length``
lines, offset and length in dictd's own base64 digits, and a ``.dict.dz``
file (gzip-compatible) holding the entries.  Each entry starts with a header
block (the headword as written, aliases, and in the Jargon File a
pronunciation and part of speech) followed by a blank line and the indented
definition.  A record is "What is <headword>?" with the definition cleaned of
markup; only definitions of ``min_words``..``max_words`` words are kept, so
answers are long enough to score and short enough for a small model to
match.  Several headwords can point at one entry (aliases): it is read once.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Iterator, Optional

from qastream.datasets.records import BadRows, Record, word_count

DICTD_DIR = Path("/usr/share/dictd")
#: Short names of the dictionaries the project installs (Makefile).
KNOWN = ("foldoc", "jargon")

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {c: i for i, c in enumerate(B64)}

MIN_WORDS = 40
MAX_WORDS = 300

_DOMAIN_TAG = re.compile(r"^<[^<>\n]{1,80}>\s*")            # FOLDOC: <programming, tool>
_URL_REF = re.compile(r"\{?\(?(?:https?|ftp|mailto|news|telnet|gopher):[^\s{}]*\)?\}?")
_CROSS_REF = re.compile(r"\{([^{}]*)\}")                      # {cross-reference} -> its text
_DATE = re.compile(r"\(\d{4}-\d{2}-\d{2}\)")                  # FOLDOC's last-edited stamp
_BRACKETED = re.compile(r"^\[[^\[\]]*\]\.?$", re.S)          # a paragraph that is only [a citation]
_ETYMOLOGY = re.compile(r"^\[[^\[\]]*\]\s*")                   # Jargon: [from amateur radio] ...
_WHITESPACE = re.compile(r"\s+")


def decode_b64(text: str) -> int:
    """A dictd base64 number (most significant digit first)."""
    value = 0
    for char in text:
        value = value * 64 + _B64_VALUE[char]
    return value


def dictionary_paths(spec: str) -> tuple[Path, Path]:
    """``(index, data)`` for a short name (``foldoc``), an ``.index`` path, or a path without suffix."""
    if spec in KNOWN:
        base = DICTD_DIR / spec
    else:
        path = Path(spec)
        base = path.with_suffix("") if path.suffix == ".index" else path
    index = base.with_name(base.name + ".index")
    for candidate in (base.with_name(base.name + ".dict.dz"), base.with_name(base.name + ".dict")):
        if candidate.exists():
            return index, candidate
    return index, base.with_name(base.name + ".dict.dz")


def read_data(path: Path) -> bytes:
    """The whole dictionary text; ``.dict.dz`` is gzip with an extra header field, so gzip reads it."""
    if path.suffix == ".dz":
        with gzip.open(path, "rb") as handle:
            return handle.read()
    return path.read_bytes()


def clean_definition(body: str) -> str:
    """Definition text without markup: cross-reference braces, URLs, domain tags, dates, citations."""
    paragraphs: list[str] = []
    for paragraph in re.split(r"\n\s*\n", body):
        text = _WHITESPACE.sub(" ", paragraph).strip()
        if not text or _BRACKETED.match(text):
            continue
        text = _DOMAIN_TAG.sub("", text)
        if not paragraphs:
            text = _ETYMOLOGY.sub("", text)
        text = _URL_REF.sub("", text)
        text = _CROSS_REF.sub(r"\1", text)
        text = _DATE.sub("", text)
        text = _WHITESPACE.sub(" ", text).strip()
        if text:
            paragraphs.append(text)
    return " ".join(paragraphs)


def split_entry(entry: str) -> tuple[str, str]:
    """``(headword as written, body)``: the header block ends at the first blank line."""
    header, _, body = entry.partition("\n\n")
    first = header.strip().splitlines()[0].strip() if header.strip() else ""
    return first, body


def read_dictd(spec: str, bad: BadRows, *, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS,
               source: Optional[str] = None) -> Iterator[Record]:
    """Records of one dictionary, in index order."""
    index_path, data_path = dictionary_paths(spec)
    data = read_data(data_path)
    name = source or index_path.stem
    seen: set[int] = set()
    with open(index_path, encoding="utf-8", errors="replace") as index:
        for number, line in enumerate(index, 1):
            where = f"{index_path.name}:{number}"
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                bad.add("index line without 3 tab-separated fields", where)
                continue
            headword, offset_text, length_text = fields
            if headword.startswith("00-database-") or headword.startswith("00database"):
                continue  # the dictionary's own metadata, not an entry
            try:
                offset, length = decode_b64(offset_text), decode_b64(length_text)
            except KeyError:
                bad.add("offset or length not in dictd base64", where)
                continue
            if offset in seen:
                continue  # an alias of an entry already read
            seen.add(offset)
            if offset + length > len(data) or length == 0:
                bad.add("offset or length outside the data file", where)
                continue
            entry = data[offset:offset + length].decode("utf-8", errors="replace")
            title, body = split_entry(entry)
            answer = clean_definition(body)
            words = word_count(answer)
            if not title:
                bad.add("entry without a headword", where)
            elif words < min_words:
                bad.add(f"definition under {min_words} words", where)
            elif words > max_words:
                bad.add(f"definition over {max_words} words", where)
            else:
                yield Record(question=f"What is {title}?", answer=answer, id=headword, category=name)
