"""The Yahoo Answers CSV (``class,title,content,best answer``; Zhang et al.'s ``yahoo_answers_csv``).

Fields are quoted and may span lines; inside them the dump writes line breaks
as the two characters ``\\n`` and sometimes HTML line breaks and entities.  The
question is the title followed by the content (the content often says what
the title leaves out); the reference is the best answer.  The original files
have no header row; one is recognised and skipped if present.
"""

from __future__ import annotations

import csv
import html
import re
import sys
from pathlib import Path
from typing import Iterator

from qastream.datasets.records import BadRows, Record

#: The ten topic classes of the data set, by their number in the first column.
CLASSES = {
    "1": "Society & Culture", "2": "Science & Mathematics", "3": "Health", "4": "Education & Reference",
    "5": "Computers & Internet", "6": "Sports", "7": "Business & Finance", "8": "Entertainment & Music",
    "9": "Family & Relationships", "10": "Politics & Government",
}

_BREAK_TAG = re.compile(r"<br\s*/?>", re.I)
_WHITESPACE = re.compile(r"\s+")


def clean(text: str) -> str:
    """Field text with ``\\n`` escapes, ``<br>`` tags and HTML entities turned into plain text."""
    text = text.replace("\\n", "\n").replace("\\r", "\n").replace("\\t", " ")
    text = html.unescape(_BREAK_TAG.sub("\n", text))
    return _WHITESPACE.sub(" ", text).strip()


def _is_header(row: list[str]) -> bool:
    return bool(row) and row[0].strip().lower() in ("class", "class index", "label", "topic")


def read_yahoo(path: str | Path, bad: BadRows) -> Iterator[Record]:
    """Records of a Yahoo Answers CSV file."""
    path = Path(path)
    # Best answers run to tens of kilobytes; the csv module's default cap is 128 KiB.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        row_number = 0
        while True:
            row_number += 1
            where = f"{path.name}:{reader.line_num + 1}"
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                bad.add(f"unreadable CSV row ({exc})", where)
                continue
            if row_number == 1 and _is_header(row):
                continue
            if not any(field.strip() for field in row):
                continue  # blank line
            if len(row) != 4:
                bad.add(f"{len(row)} columns instead of 4", where)
                continue
            label, title, content, answer = row
            title, content, answer = clean(title), clean(content), clean(answer)
            if not title and not content:
                bad.add("no title and no content", where)
                continue
            if not answer:
                bad.add("no best answer", where)
                continue
            question = f"{title} {content}".strip()
            label = label.strip()
            yield Record(question=question, answer=answer, id=f"{path.name}:{row_number}",
                         category=CLASSES.get(label, label or None))
