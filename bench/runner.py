"""The runs loop every benchmark shares: one JSON line per run, min/median/max, the ratio last.

Each benchmark supplies what one run measures and how the runs conclude;
:func:`run_benchmark` makes them all print the same shape, so BENCHMARKS.md
can quote any of them the same way and a script can take the last line.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Sequence

import stack  # noqa: F401  (importing it puts the repository on sys.path, for qastream)
from measure import print_machine

from qastream.telemetry.stats import median

Run = dict[str, Any]
#: ``(key of a run's result, label, digits)``: one line of the summary.
Field = tuple[str, str, int]


def spread(values: Sequence[float]) -> dict[str, Optional[float]]:
    """min / median / max of a figure over runs."""
    return {"min": min(values), "median": median(values), "max": max(values)}


def median_of(runs: Sequence[Run], key: str) -> Optional[float]:
    """The median over the runs of one figure, leaving out runs that did not measure it."""
    return median(r[key] for r in runs if r.get(key) is not None)


def fmt(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_summary(title: str, runs: Sequence[Run], fields: Sequence[Field]) -> None:
    """``min / median / max`` of each ``(key, label, digits)`` over the runs."""
    print(f"{title}: {len(runs)} run(s), min / median / max")
    for key, label, digits in fields:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            s = spread(values)
            print(f"  {label:<44} {fmt(s['min'], digits):>10} {fmt(s['median'], digits):>10} "
                  f"{fmt(s['max'], digits):>10}")


def run_benchmark(name: str, runs: int, one_run: Callable[[int], Run], fields: Sequence[Field],
                  conclude: Callable[[list[Run]], str], *, title: Optional[str] = None) -> list[Run]:
    """Print the machine, run ``one_run(1..runs)`` printing each result, summarise, print the conclusion.

    ``one_run`` returns its figures (``run`` is added); ``conclude`` gets all the
    results and returns the ratio line, printed last; it may print context first.
    """
    print_machine(name)
    results: list[Run] = []
    for index in range(1, runs + 1):
        result = {"run": index, **one_run(index)}
        print(json.dumps(result), flush=True)
        results.append(result)
    print_summary(title or name, results, fields)
    print(conclude(results), flush=True)
    return results
