"""The package as ``pip install .`` (the production image) installs it, used from outside the checkout.

Editable installs see every file of the source tree, so they hide a
subpackage that the wheel leaves out (``qastream/services`` once had no
``__init__.py``), package data that is not declared (migrations, the
dashboard's static files) and console scripts that are not declared.  This
test builds the wheel from the checkout, installs it with its dependencies
into a new virtualenv based on the bare interpreter, and runs it from a
directory that is not the checkout, with no ``PYTHONPATH``.

torch is installed first and pinned (``torch==2.13.0``) as the Makefile and
the Dockerfile do: pip takes this machine's local CPU wheel for that pin,
where an unpinned dependency would fetch several GB of CUDA builds.  The
other dependencies come from the package index (pip's cache after the first
run).  About 100 s on 2 cores.
"""

from __future__ import annotations

import ast
import os
import shutil
import sqlite3
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from stackutil import ARTIFACTS, Broker, LLMServer, Worker, isolated_env, wait_until

from qastream.devtools.embedded import free_port, http_ok, log_file, stop, wait_for

# The first test builds the wheel and installs it with its dependencies (minutes): the global bound.
pytestmark = pytest.mark.timeout(600)

CHECKOUT = Path(__file__).resolve().parents[2]
#: What the build reads; everything else (.venv, var, test artifacts) stays behind.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "qastream")
TORCH = "torch==2.13.0"


def project_commands() -> set[str]:
    """Names of the ``@app.command`` functions in qastream/commands, as the CLI spells them."""
    names = set()
    for module in (CHECKOUT / "qastream" / "commands").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    isinstance(d, ast.Call) and ast.unparse(d.func) == "app.command" for d in node.decorator_list):
                names.add(node.name.replace("_", "-"))
    return names


@dataclass
class Installed:
    """A virtualenv holding only the built wheel and its dependencies."""

    bin: Path
    outside: Path
    env: dict[str, str]

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
        result = subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=self.outside, env=env or self.env,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        return result.stdout


def clean_env() -> dict[str, str]:
    """This process's environment without anything that points Python at the checkout."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("QASTREAM_", "PYTHON", "VIRTUAL_ENV"))}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("package")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        origin = CHECKOUT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / name)
    env = clean_env()
    steps = [
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(root / "dist"), str(source)],
        # The bare interpreter this virtualenv was made from: the new one sees none of its packages.
        [getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(root / "venv")],
        [str(root / "venv" / "bin" / "pip"), "install", "--quiet", TORCH],
    ]
    for step in steps:
        subprocess.run(step, cwd=root, env=env, check=True, timeout=900)
    wheel = next((root / "dist").glob("qastream-*.whl"))
    subprocess.run([str(root / "venv" / "bin" / "pip"), "install", "--quiet", str(wheel)], cwd=root, env=env,
                   check=True, timeout=900)
    outside = root / "elsewhere"
    outside.mkdir()
    return Installed(root / "venv" / "bin", outside, env)


def test_the_installed_package_is_the_one_imported(installed: Installed) -> None:
    location = installed.run("python", "-c", "import qastream.app, qastream.services.storage; "
                                             "print(qastream.__file__)")
    assert Path(location.strip()).is_relative_to(installed.bin.parent), location
    assert not Path(location.strip()).is_relative_to(CHECKOUT)


def test_help_lists_every_project_command(installed: Installed) -> None:
    listed = installed.run("qastream", "--help")
    commands = project_commands()
    assert {"dev", "llm-server", "db-upgrade", "load", "dlq"} <= commands
    missing = sorted(name for name in commands if f"\n  {name} " not in listed)
    assert not missing, f"qastream --help does not list {missing}:\n{listed}"


def test_db_upgrade_migrates_a_fresh_sqlite_file(installed: Installed) -> None:
    database = installed.outside / f"fresh-{uuid.uuid4().hex[:6]}.db"
    env = {**installed.env, "QASTREAM_DATABASE_URL": f"sqlite:///{database}"}
    installed.run("qastream", "db-upgrade", env=env)
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        head = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"questions", "responses", "alembic_version"} <= tables
    assert head is not None


def test_a_worker_from_the_package_serves_the_dashboard_and_answers(
        installed: Installed, broker: Broker, echo_llm: LLMServer, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    env = {**isolated_env(broker, echo_llm, tmp_path / "var"), "QASTREAM_WEB_HOST": "127.0.0.1",
           "QASTREAM_WEB_PORT": str(port)}
    env = {k: v for k, v in env.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    with log_file(str(ARTIFACTS), "installed-package-worker") as log:  # the child has its own descriptor
        process = subprocess.Popen([str(installed.bin / "qastream"), "worker", "-l", "info"], cwd=installed.outside,
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    worker = Worker(f"http://127.0.0.1:{port}", port, env, process)
    try:
        wait_for(lambda: http_ok(f"{worker.url}/health"), process, "the installed worker", timeout=180)
        for path, kind in (("/", "text/html"), ("/static/dashboard.js", "javascript"),
                           ("/static/dashboard.css", "text/css")):
            with urllib.request.urlopen(worker.url + path, timeout=10) as response:
                assert response.status == 200
                assert kind in response.headers["Content-Type"]
                assert response.read()
        question = f"What does the installed package {uuid.uuid4().hex[:6]} answer?"
        code, body = worker.query(question, question)
        assert code == 202, body
        qid = body["question_id"]
        wait_until(lambda: worker.status(qid)[1].get("status") == "completed", 120, "the question to complete")
        assert worker.status(qid)[1]["result"]["answer"] == question
    finally:
        stop(process, "installed worker")
