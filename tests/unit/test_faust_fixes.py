"""The commit-offset fix for faust-streaming #606, on the consumer's own bookkeeping."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from qastream import faust_fixes

TP0 = TP("questions-pending", 0)


def bookkeeping(acked: list[int], gap: tuple[int, int], committed: int) -> SimpleNamespace:
    """The attributes ``_new_offset`` reads, as a restarted consumer has them."""
    gaps = defaultdict(IntervalTree)
    gaps[TP0].addi(*gap)
    return SimpleNamespace(_acked={TP0: list(acked)}, _gap=gaps, _committed_offset={TP0: committed},
                           _acked_index={TP0: set(acked)})


def test_a_gap_overlapping_acked_offsets_commits_everything_at_once():
    # Offsets 11..20 were processed; the fetcher reported 11..15 as a gap too.
    state = bookkeeping(acked=list(range(11, 21)), gap=(11, 16), committed=10)
    assert faust_fixes.new_offset(state, TP0) == 21
    assert state._acked[TP0] == []


def test_the_unpatched_method_stalls_on_the_same_bookkeeping():
    """Documents the bug the fix is for: without it the commit stops at the first duplicate."""
    state = bookkeeping(acked=list(range(11, 21)), gap=(11, 16), committed=10)
    assert faust_fixes.original_new_offset(state, TP0) < 21


def test_install_patches_the_consumer():
    faust_fixes.install()
    assert Consumer._new_offset is faust_fixes.new_offset
