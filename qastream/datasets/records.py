"""The record every data set reader yields, and the count of rows it could not use.

Readers never stop on a bad row: users' dumps are large and a little dirty,
and one broken line must not cost the other million.  Each reader counts
what it skipped in :class:`BadRows` by reason, with the first place each
reason was seen, so the closing summary can say what to fix and where.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Record:
    """A question with its reference answer, from any data set."""

    question: str
    answer: str
    id: Optional[str] = None          # the data set's own id, when it has one (not the question_id)
    category: Optional[str] = None


@dataclass
class BadRows:
    """Rows skipped, counted by reason, with where each reason first appeared."""

    counts: Counter = field(default_factory=Counter)
    first_seen: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, where: str = "") -> None:
        """Count one skipped row."""
        self.counts[reason] += 1
        self.first_seen.setdefault(reason, where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        """Reason -> count, most frequent first."""
        return dict(self.counts.most_common())

    def lines(self) -> list[str]:
        """One line per reason, for summaries."""
        return [f"{n:>8}  {reason}" + (f"  (first at {self.first_seen[reason]})" if self.first_seen.get(reason)
                                       else "")
                for reason, n in self.counts.most_common()]


def word_count(text: str) -> int:
    """Words as whitespace-separated tokens."""
    return len(text.split())


def sample(items: Iterable[T], size: int, seed: int) -> list[T]:
    """A uniform random sample of ``size`` items in one pass (reservoir sampling), in input order.

    One pass because a Yahoo Answers dump has over a million rows and need not
    fit in memory to be sampled.
    """
    rng = random.Random(seed)
    reservoir: list[tuple[int, T]] = []
    for i, item in enumerate(items):
        if i < size:
            reservoir.append((i, item))
        else:
            j = rng.randint(0, i)
            if j < size:
                reservoir[j] = (i, item)
    return [item for _, item in sorted(reservoir, key=lambda pair: pair[0])]


def take(items: Iterable[T], limit: Optional[int]) -> Iterator[T]:
    """The first ``limit`` items (all when ``limit`` is None)."""
    for i, item in enumerate(items):
        if limit is not None and i >= limit:
            return
        yield item
