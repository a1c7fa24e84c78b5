"""Profiles of a benchmark's worker with py-spy, summarised as the top functions.

py-spy samples another process without slowing its event loop much, so the
profile shows where the measured run itself spent its time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from stack import PYTHON, ROOT


def py_spy() -> Optional[str]:
    """The ``py-spy`` next to this interpreter (installed by ``make bench``), or on the PATH."""
    local = Path(PYTHON).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@contextmanager
def profiling(pid: int, out: Path, *, rate: int = 100) -> Iterator[None]:
    """Sample ``pid`` with py-spy (raw collapsed stacks at ``out``) while the block runs."""
    binary = py_spy()
    if binary is None:
        print("py-spy is not installed (make bench installs it): no profile", file=sys.stderr)
        yield
        return
    process = subprocess.Popen([binary, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                                "--nonblocking", "--output", str(out), "--duration", "3600"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield
    finally:
        process.send_signal(2)  # SIGINT: py-spy writes what it has and exits
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


#: Frames every sample of a worker passes through (the CLI, the event loop, thread start-up): as
#: "total" entries they say nothing, so the inclusive ranking leaves them out.
_SCAFFOLDING = ("click/", "runpy", "<module>", "asyncio/base_events.py", "asyncio/events.py", "mode/worker.py",
                "faust/cli/", "threading.py", "concurrent/futures/thread.py", "faust/app/base.py",
                "qastream/app.py", "qastream/__main__.py")


def top_entries(collapsed: Path, n: int = 10) -> dict[str, list[tuple[str, float]]]:
    """The ``n`` functions with the most samples on top of the stack (self) and anywhere in it (total).

    Shares are of all samples.  Frames are ``function (file)`` with the path shortened to the package;
    the inclusive ranking leaves out the scaffolding every sample passes through.
    """
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    if not collapsed.exists():
        return {"self": [], "total": []}
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        weight = int(count)
        frames = [_short(f) for f in stack.split(";") if not f.startswith("process ") and
                  not f.startswith("thread ")]
        if not frames:
            continue
        samples += weight
        self_counts[frames[-1]] += weight
        for frame in set(frames):
            if not any(marker in frame for marker in _SCAFFOLDING):
                total_counts[frame] += weight
    share = lambda c: [(name, round(100.0 * k / samples, 1)) for name, k in c.most_common(n)]  # noqa: E731
    return {"self": share(self_counts), "total": share(total_counts), "samples": samples}


def _short(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def print_profile(profile: dict[str, Any], n: int = 10) -> None:
    print(f"profile of the worker ({profile.get('samples', 0)} samples): top {n} by own time (self) and "
          "by time including callees (total), % of samples")
    for kind in ("self", "total"):
        print(f"  {kind}:")
        for name, share in profile.get(kind, [])[:n]:
            print(f"    {share:5.1f}%  {name}")

