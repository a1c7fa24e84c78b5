"""What a figure needs besides itself: steady-state rates, CPU use, and the machine it ran on.

:func:`steady_rate` is the least-squares completions/s over the middle of a
run, leaving out ramp-up and drain; :class:`CpuMeter` reads ``/proc`` so
that a benchmark can say which process used the cores (on two cores the load
generator's CPU is the worker's).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any, Sequence


def steady_rate(times: Sequence[float], low: float = 0.1, high: float = 0.9) -> float:
    """Completions per second in the steady state: least-squares slope of the completion count over time,
    fitted to the completions between the ``low`` and ``high`` fractions of them (ramp-up and drain left out).

    A fit rather than count/time between two completions, because completions can come in waves (C LLM
    slots answering together every 2.5 s) and two arbitrary points inside waves bias the quotient.
    """
    ordered = sorted(times)
    first, last = int(len(ordered) * low), max(int(len(ordered) * high), int(len(ordered) * low) + 2)
    xs = ordered[first:last]
    ys = list(range(first, first + len(xs)))
    if len(xs) < 2 or xs[-1] == xs[0]:
        raise ValueError("too few distinct completion times for a rate")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def machine() -> dict[str, Any]:
    """Cores, memory and load: the context every figure needs."""
    memory = None
    try:
        with open("/proc/meminfo") as f:
            total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        memory = f"{total_kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {"cores": os.cpu_count(), "memory": memory, "load_avg_1m": round(os.getloadavg()[0], 2)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[float, float]:
    """(idle, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (values[3] + values[4]) / tick, sum(values) / tick


class CpuMeter:
    """CPU use of some processes and of the machine over a block, in % of one core."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.result: dict[str, float] = {}

    def __enter__(self) -> "CpuMeter":
        self._started = time.monotonic()
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine = machine_ticks()
        return self

    def __exit__(self, *exc: Any) -> None:
        wall = time.monotonic() - self._started
        for name, pid in self.pids.items():
            try:
                self.result[f"{name}_cpu_pct"] = round(100.0 * (cpu_seconds(pid) - self._before[name]) / wall, 1)
            except (FileNotFoundError, ProcessLookupError):
                pass
        idle, total = machine_ticks()
        busy = 1.0 - (idle - self._machine[0]) / max(total - self._machine[1], 1e-9)
        self.result["machine_busy_pct"] = round(100.0 * busy * (os.cpu_count() or 1), 1)


def print_machine(name: str) -> None:
    print(json.dumps({"benchmark": name, **machine()}), flush=True)

