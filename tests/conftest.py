"""Marks and time-outs by folder, so a test file cannot forget them.

Every test under ``tests/integration`` gets the ``integration`` marker (``-m
"not integration"`` runs without the broker and services).  Each test gets a
time-out from its folder unless it carries its own ``@pytest.mark.timeout``:
a hung unit test then fails in a minute, not at the global ``timeout`` of
setup.cfg, which stays as the ceiling for anything not covered here.  The
integration budget includes session fixtures that the first test of a run
sets up (Tansu, the LLM server, a worker's table recovery).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

#: Seconds per test, by top-level folder under tests/.
FOLDER_TIMEOUTS = {"unit": 60, "integration": 300}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:  # a test outside tests/ (a path given on the command line)
            continue
        if folder == "integration":
            item.add_marker(pytest.mark.integration)
        if folder in FOLDER_TIMEOUTS and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(FOLDER_TIMEOUTS[folder]))
