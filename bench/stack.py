"""The stack a benchmark measures: Tansu, the embedded LLM server and workers on free ports.

:class:`Stack` starts them with :mod:`qastream.devtools.embedded` (the same code
``qastream dev`` and the test fixtures use) in a throw-away data directory,
so a benchmark never touches a developer's broker or database.  The HTTP and
SQLite helpers below read what the worker did: SQLite in WAL mode, so reading
never blocks the worker's writes.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from qastream.devtools.embedded import (  # noqa: E402
    free_port,
    http_ok,
    log_file,
    start_llm_server,
    start_tansu,
    start_worker,
    stop,
    wait_for,
)

PYTHON = sys.executable


class Stack:
    """Tansu, optionally the embedded LLM server, and workers, on free ports in a temporary directory."""

    def __init__(self, name: str, *, keep: bool = False) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"qastream-bench-{name}-"))
        self.logs = str(self.workdir / "logs")
        self.keep = keep
        self.broker_port: Optional[int] = None
        self.llm_port: Optional[int] = None
        self.web_port: Optional[int] = None
        self.worker: Optional[subprocess.Popen] = None
        #: The worker's database when not the stack's own SQLite file (``db_path``).
        self.database_url: Optional[str] = None
        self._processes: list[tuple[str, subprocess.Popen]] = []

    # -- processes
    def start_broker(self) -> str:
        self.broker_port = free_port()
        self._processes.append(("tansu", start_tansu("127.0.0.1", self.broker_port,
                                                     log=log_file(self.logs, "tansu"))))
        return self.broker_url

    def start_llm(self, *, latency: float, parallel: int, max_queue: int = 4096) -> str:
        self.llm_port = free_port()
        self._processes.append(("llm", start_llm_server(
            "127.0.0.1", self.llm_port, backend="echo", model="smollm2",
            extra=["--latency", str(latency), "--parallel", str(parallel), "--max-queue", str(max_queue)],
            log=log_file(self.logs, "llm"), env=clean_env())))
        return self.llm_url

    def env(self, **settings: Any) -> dict[str, str]:
        """A worker's environment: nothing inherited from ``QASTREAM_*``, this stack's addresses, ``settings``."""
        if self.web_port is None:
            self.web_port = free_port()
        env = clean_env()
        env.update({
            "QASTREAM_BROKER_URL": self.broker_url,
            "QASTREAM_WEB_PORT": str(self.web_port),
            "QASTREAM_DATA_DIR": str(self.workdir / "var"),
            "QASTREAM_LOG_LEVEL": "warning",
        })
        if self.llm_port is not None:
            env["QASTREAM_OLLAMA_URL"] = self.llm_url
        env.update({f"QASTREAM_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in settings.items()})
        return env

    def start_worker(self, *, script: Optional[str] = None, **settings: Any) -> subprocess.Popen:
        """Start a worker and wait for ``/health`` (tables recovered, partitions assigned).

        ``script`` runs another entry point with the same CLI (``bench/acceptance_worker.py``).
        """
        env = self.env(**settings)
        log = log_file(self.logs, f"worker-{len(self._processes)}")
        if script is None:
            self.worker = start_worker(env, web_host="127.0.0.1", web_port=self.web_port, log=log)
        else:
            with log:  # the child has its own descriptor
                self.worker = subprocess.Popen([PYTHON, script, "worker", "-l", "info"], env=env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT))
            wait_for(lambda: http_ok(f"{self.url}/health"), self.worker, "worker", timeout=180)
        self._processes.append(("worker", self.worker))
        return self.worker

    def stop_worker(self, *, hard: bool = False) -> None:
        if self.worker is not None:
            stop(self.worker, "worker", hard=hard, timeout=15)
            self._processes = [(n, p) for n, p in self._processes if p is not self.worker]
            self.worker = None

    def process(self, name: str) -> subprocess.Popen:
        """The running process started as ``name`` (``tansu``, ``llm``, ``worker``, or a spawned name)."""
        return next(p for n, p in self._processes if n == name)

    def spawn(self, name: str, args: Sequence[str], env: Optional[dict[str, str]] = None) -> subprocess.Popen:
        """Start another process of the benchmark, logging to ``logs/name.log``; stopped with the stack."""
        with log_file(self.logs, name) as log:  # the child has its own descriptor
            process = subprocess.Popen(list(args), env=env or clean_env(), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT))
        self._processes.append((name, process))
        return process

    def close(self) -> None:
        for name, process in reversed(self._processes):
            stop(process, name, timeout=15)
        self._processes.clear()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print(f"kept {self.workdir}", file=sys.stderr)

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- addresses and files
    @property
    def broker_url(self) -> str:
        return f"kafka://127.0.0.1:{self.broker_port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def llm_url(self) -> str:
        return f"http://127.0.0.1:{self.llm_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def db_path(self) -> Path:
        return self.workdir / "var" / "qastream.db"

    def qastream(self, *args: str, timeout: float = 900, **settings: Any) -> str:
        """Run a ``qastream`` command with this stack's settings; returns its output."""
        done = subprocess.run([PYTHON, "-m", "qastream", *args], env=self.env(**settings), cwd=str(ROOT),
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"qastream {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout


def clean_env() -> dict[str, str]:
    """The environment without ``QASTREAM_*`` settings, so a developer's shell cannot change a benchmark."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QASTREAM_")}


# -- HTTP and the database -------------------------------------------------------------------------------------


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def post_json(url: str, body: Any, timeout: float = 10) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def sqlite_scalar(path: Path, sql: str) -> Any:
    """One value from the worker's SQLite file (WAL: reading never blocks the writer)."""
    if not path.exists():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as connection:
        try:
            return connection.execute(sql).fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not there yet
            return None


def sqlite_times(path: Path, sql: str) -> list[float]:
    """Epoch seconds of a datetime column (SQLAlchemy stores UTC as naive text in SQLite)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as connection:
        rows = connection.execute(sql).fetchall()
    return sorted(_epoch(row[0]) for row in rows)


def _epoch(value: str) -> float:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll ``predicate`` until true; returns the seconds waited, raises after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_stored(stack: Stack, count: int, timeout: float) -> float:
    """Wait until ``count`` answers are in the worker's database."""
    return wait_until(lambda: (sqlite_scalar(stack.db_path, "SELECT count(*) FROM responses") or 0) >= count,
                      timeout, f"{count} stored answers")


def completion_times(stack: Stack) -> list[float]:
    """When each answer was stored (the store stage's batch time), sorted."""
    return sqlite_times(stack.db_path, "SELECT created_at FROM responses")

