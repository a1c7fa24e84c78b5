"""Fixes for Faust: the commit stall after a restart with a backlog (faust-streaming #606), and
the table and router views' 5xx for a table name that does not exist.

``Consumer._new_offset`` merges offset gaps (records the broker skipped)
into the list of acked offsets.  When a gap overlaps offsets that were
already acked, they are added a second time; ``consecutive_numbers`` then
stops at the first duplicate, so each commit advances only a few offsets,
the committed position falls far behind what was processed, and the next
restart replays about a thousand events (DESIGN §4, item 3).

The fix is the one measured in DESIGN: drop duplicates before looking for
the first run of consecutive offsets.  It is applied by replacing the
method with :func:`new_offset`, which is Faust 0.15.3's own code plus that
one step; :func:`install` refuses to patch any other Faust version, so an
upgrade is a conscious decision.  Redelivery stays harmless either way
(every stage is idempotent), this only keeps it rare and cheap.

Faust's ``/table/{name}/{key}/``, ``/router/{name}/`` and
``/router/{name}/{key}/`` look the name up in the partition assignor, whose
``KeyError`` they turn into a 503 (or let through as a 500): a client's typo
looked like an outage worth retrying.  :func:`known_table` answers 404 first.
"""

from __future__ import annotations

from functools import wraps
from typing import Any, Awaitable, Callable, List, Optional

import faust
from faust.transport.consumer import Consumer
from faust.types import TP
from faust.utils.functional import consecutive_numbers
from faust.web.apps import router as router_views
from faust.web.apps import tables as table_views
from faust.web.exceptions import NotFound

PATCHED_FAUST_VERSION = "0.15.3"

#: Faust's own method, kept so tests can show the stall it causes.
original_new_offset = Consumer._new_offset


def new_offset(self: Any, tp: TP) -> Optional[int]:
    """The offset to commit for ``tp``: one past the first run of consecutive acked offsets."""
    acked = self._acked[tp]
    if acked:
        max_offset = max(acked)
        gap_for_tp = self._gap[tp]
        if gap_for_tp:
            candidates = gap_for_tp.overlap(0, max_offset)
            sorted_candidates = sorted(candidates, key=lambda x: x.begin)
            if sorted_candidates:
                stuff_to_add: List[int] = []
                for entry in sorted_candidates:
                    stuff_to_add.extend(range(entry.begin, entry.end))
                new_max_offset = max(stuff_to_add[-1], max_offset + 1)
                acked.extend(stuff_to_add)
                gap_for_tp.chop(0, new_max_offset)
        # The fix: a gap can overlap offsets already acked; duplicates would
        # cut the consecutive run short at the first repeated offset.
        acked[:] = sorted(set(acked))
        committed_offset = self._committed_offset[tp]
        if committed_offset:
            if min(acked) - committed_offset > 1:
                return None
        batch = next(consecutive_numbers(acked))
        acked[: len(batch)] = []
        self._acked_index[tp].difference_update(batch)
        return batch[-1] + 1
    return None


ViewGet = Callable[..., Awaitable[Any]]

#: Faust views that take a table ``name`` and fail with a 5xx when it is no table.
NAMED_TABLE_VIEWS = (table_views.TableKeyDetail, router_views.TableDetail, router_views.TableKeyDetail)


def known_table(get: ViewGet) -> ViewGet:
    """``get`` of a Faust view, answering 404 for a ``name`` that is not one of the app's tables."""

    @wraps(get)
    async def checked(self: Any, request: Any, name: str, **kwargs: Any) -> Any:
        if name not in self.app.tables:
            raise NotFound("unknown table", name=name)
        return await get(self, request, name=name, **kwargs)

    checked.checks_table_name = True  # type: ignore[attr-defined]
    return checked


def install() -> None:
    """Apply the fixes above, on the Faust version they were written for (once)."""
    if faust.__version__ != PATCHED_FAUST_VERSION:
        raise RuntimeError(f"qastream.faust_fixes targets faust-streaming {PATCHED_FAUST_VERSION}, "
                           f"found {faust.__version__}: re-check faust-streaming #606 and update the fix")
    Consumer._new_offset = new_offset
    for view in NAMED_TABLE_VIEWS:
        if not getattr(view.get, "checks_table_name", False):
            view.get = known_table(view.get)
