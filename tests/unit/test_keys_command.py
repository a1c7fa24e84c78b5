"""``qastream keys``: the key alone on stdout, shown once and stored as a hash; clear errors without tracebacks."""

import dataclasses
import sys

import pytest
from click.testing import CliRunner
from faust.cli.faust import cli
from sqlalchemy import create_engine

from qastream.commands import keys as command
from qastream.commands.keys import key_table
from qastream.db import keys
from qastream.db.keys import KeyInfo
from qastream.policy.access import Limits
from qastream.policy.keys import PREFIX, hash_key


@pytest.fixture
def database(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/keys.db"
    monkeypatch.setattr(command, "settings", dataclasses.replace(command.settings, database_url=url))
    return url


def run(*args):
    argv = ["-A", "qastream.app", "keys", *args]
    pytest_argv = list(sys.argv)
    sys.argv[:] = ["qastream", *argv]  # Faust's CLI reads -W from sys.argv itself (see test_worker)
    try:
        return CliRunner().invoke(cli, argv)
    finally:
        sys.argv[:] = pytest_argv


def dump(url):
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return "\n".join(c.connection.driver_connection.iterdump())
    finally:
        engine.dispose()


def test_create_prints_only_the_key_and_stores_only_its_hash(database):
    result = run("create", "ci", "--scope", "submit,read", "--rate", "2.5", "--max-in-flight", "3")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert result.stdout == key + "\n" and key.startswith(PREFIX)
    assert "shown once" in result.stderr and key not in result.stderr
    stored = dump(database)
    assert key not in stored and hash_key(key) in stored
    listed = run("list")
    assert listed.exit_code == 0
    assert key not in listed.output and hash_key(key) not in listed.output
    header, row = listed.stdout.splitlines()
    assert header.split()[:2] == ["name", "scopes"]
    assert row.split()[:6] == ["ci", "submit,read", "2.5", "3", "3", row.split()[5]]


def test_revoke_then_list_shows_when(database):
    assert run("create", "ci", "--scope", "read").exit_code == 0
    result = run("revoke", "ci")
    assert result.exit_code == 0 and "revoked" in result.stderr
    row = run("list").stdout.splitlines()[1]
    assert row.split()[0] == "ci" and row.rstrip()[-8:].count(":") == 2  # a revocation time, not "-"


@pytest.mark.parametrize("args, code, fragment", [
    (("create", "ci"), 2, "--scope is required"),
    (("create", "ci", "--scope", "write"), 2, "unknown scope(s) 'write'"),
    (("create", "ci", "--scope", ""), 2, "--scope is required"),
    (("create", "c i", "--scope", "read"), 2, "not valid"),
    (("create", "ci", "--scope", "read", "--burst", "3"), 2, "--burst needs --rate"),
    (("create", "ci", "--scope", "read", "--rate", "0"), 2, "--rate must be a positive"),
    (("create", "ci", "--scope", "read", "--rate", "abc"), 2, "abc"),
    (("create", "ci", "--scope", "read", "--max-in-flight", "0"), 2, "--max-in-flight"),
    (("create", "--scope", "read"), 2, "needs a NAME"),
    (("revoke",), 2, "needs a NAME"),
    (("revoke", "nobody"), 1, "no key named 'nobody'"),
    (("revoke", "ci", "--scope", "read"), 2, "apply to create"),
    (("list", "ci"), 2, "takes no name"),
    (("rotate", "ci"), 2, "rotate"),
])
def test_bad_input_is_one_clear_line_and_a_non_zero_exit(database, args, code, fragment):
    result = run(*args)
    assert result.exit_code == code, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert result.stdout == ""  # nothing a script could take for a key


def test_a_name_is_never_reused(database):
    assert run("create", "ci", "--scope", "read").exit_code == 0
    assert run("revoke", "ci").exit_code == 0
    result = run("create", "ci", "--scope", "read")
    assert result.exit_code == 1 and "exists already" in result.stderr and result.stdout == ""


def test_an_unreachable_database_is_an_error_line(monkeypatch):
    url = "postgresql+psycopg2://nobody@127.0.0.1:1/none"
    monkeypatch.setattr(command, "settings", dataclasses.replace(command.settings, database_url=url,
                                                                 db_connect_timeout_seconds=2))
    result = run("list")
    assert result.exit_code == 1 and "OperationalError" in result.stderr and "Traceback" not in result.output


def test_key_table_shows_no_hash_and_dashes_for_unlimited():
    table = key_table([KeyInfo("a", "admin", Limits(), 0.0, None, None),
                       KeyInfo("b", "read", Limits(1.5, 2, 4), 60.0, 120.0, 180.0)])
    assert table.splitlines() == [
        "name  scopes  rate/s  burst  max in flight  created              last used            revoked",
        "a     admin   -       -      -              1970-01-01 00:00:00  -                    -",
        "b     read    1.5     2      4              1970-01-01 00:01:00  1970-01-01 00:02:00  1970-01-01 00:03:00",
    ]
    assert keys.KeyInfo.__dataclass_fields__.keys().isdisjoint({"key_hash", "key"})
