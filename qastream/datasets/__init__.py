"""Data set readers: Yahoo Answers CSV, JSON/JSONL, dictd dictionaries (FOLDOC, Jargon File).

:func:`open_dataset` picks the reader from the name: ``foldoc`` and
``jargon`` (Debian's dictd packages), ``*.index`` / ``*.dict.dz`` (any dictd
dictionary), ``*.csv`` (Yahoo Answers), ``*.json`` / ``*.jsonl`` / ``*.ndjson``.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Iterator

from qastream.datasets.dictd import KNOWN, dictionary_paths, read_dictd
from qastream.datasets.jsonfile import read_json
from qastream.datasets.records import BadRows, Record
from qastream.datasets.yahoo import read_yahoo

FORMATS = ("auto", "yahoo", "json", "dictd")


def detect_format(spec: str) -> str:
    """The reader for a data set name or path."""
    name = spec.lower()
    if spec in KNOWN or name.endswith((".index", ".dict.dz", ".dict")):
        return "dictd"
    if name.endswith(".csv"):
        return "yahoo"
    if name.endswith((".json", ".jsonl", ".ndjson")):
        return "json"
    raise ValueError(f"cannot tell the format of {spec!r}: name a .csv, .json, .jsonl or .index file, "
                     f"{' or '.join(KNOWN)}, or pass --format")


def open_dataset(spec: str, bad: BadRows, fmt: str = "auto") -> Iterator[Record]:
    """Records of the data set ``spec`` (a path or ``foldoc``/``jargon``)."""
    kind = detect_format(spec) if fmt == "auto" else fmt
    if kind == "dictd":
        if spec.endswith(".dict.dz"):
            spec = spec[: -len(".dict.dz")]
        index, data = dictionary_paths(spec)
        if not (index.exists() and data.exists()):
            hint = f" (install the Debian package dict-{spec}: make install)" if spec in KNOWN else ""
            raise FileNotFoundError(f"dictd dictionary {index} / {data} not found{hint}")
        return read_dictd(spec, bad)
    if not Path(spec).exists():
        raise FileNotFoundError(f"no such file: {spec}")
    if kind == "yahoo":
        return read_yahoo(spec, bad)
    if kind == "json":
        return read_json(spec, bad)
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def open_datasets(specs: list[str], bad: BadRows, fmt: str = "auto") -> Iterator[Record]:
    """Records of several data sets in turn (``foldoc jargon``).

    Every data set is opened here, not when iteration reaches it, so a
    missing file fails before the first question is sent.
    """
    return chain.from_iterable([open_dataset(spec, bad, fmt) for spec in specs])


__all__ = ["BadRows", "Record", "FORMATS", "detect_format", "open_dataset", "open_datasets"]
