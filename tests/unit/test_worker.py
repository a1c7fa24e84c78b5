"""qastream.streaming.worker: QASTREAM_LOG_LEVEL is a worker's log level unless ``-l`` says otherwise."""

import sys
from typing import Any

import pytest
from click.testing import CliRunner
from faust.cli.faust import cli

from qastream import app as app_module
from qastream.policy.access import AuthMode
from qastream.streaming.worker import QAStreamWorker, resolve_loglevel


@pytest.mark.parametrize("cli_level, given, setting, expected", [
    ("WARN", False, "debug", "DEBUG"),     # no -l: the setting
    ("WARN", False, "warning", "WARNING"),
    ("WARN", True, "debug", "WARN"),       # -l warn is explicit even though it is Faust's default
    ("info", True, "error", "info"),
    ("WARN", False, None, "WARN"),         # an app without the setting: Faust's default
    ("WARN", False, "", "WARN"),
])
def test_resolve_loglevel(cli_level, given, setting, expected):
    assert resolve_loglevel(cli_level, given, setting) == expected


def test_the_app_starts_its_workers_with_the_qastream_worker():
    assert app_module.app.conf.Worker is QAStreamWorker
    assert app_module.app.log_level == app_module.settings.log_level


@pytest.fixture
def started_levels(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Run the Faust CLI's worker command up to the worker's start, recording its log level."""
    levels: list[Any] = []

    def record(self: QAStreamWorker) -> None:
        levels.append(self.loglevel)
        raise SystemExit(0)  # what execute_from_commandline does when the worker stops

    monkeypatch.setattr(QAStreamWorker, "execute_from_commandline", record)
    monkeypatch.setattr(app_module.app, "log_level", "debug")
    return levels


# The worker command sets web_enabled (to the value it already has) after the app was configured.
@pytest.mark.filterwarnings("ignore::faust.exceptions.AlreadyConfiguredWarning")
@pytest.mark.parametrize("args, expected", [
    ([], "DEBUG"),
    (["-l", "info"], "info"),
    (["-l", "warn"], "warn"),
    (["--loglevel=error"], "error"),
])
def test_faust_worker_command_honours_the_setting_unless_given_l(started_levels, args, expected):
    argv = ["-A", "qastream.app", "worker", *args]
    # Faust's CLI reads -W/--workdir from sys.argv itself (the list object, bound as a default argument):
    # pytest's own arguments (``-W error``) must not reach it.
    pytest_argv = list(sys.argv)
    sys.argv[:] = ["faust", *argv]
    try:
        result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    finally:
        sys.argv[:] = pytest_argv
    assert result.exit_code == 0, result.output
    assert [str(level).upper() for level in started_levels] == [expected.upper()]


@pytest.mark.filterwarnings("ignore::faust.exceptions.AlreadyConfiguredWarning")
@pytest.mark.parametrize("bind, mode, anonymous, refused", [
    ("0.0.0.0", AuthMode.OFF, False, True),
    ("10.1.2.3", AuthMode.OFF, False, True),
    ("0.0.0.0", AuthMode.OFF, True, False),
    ("0.0.0.0", AuthMode.REQUIRED, False, False),
    ("127.0.0.1", AuthMode.OFF, False, False),
])
def test_a_worker_reachable_from_other_machines_needs_keys_or_allow_anonymous(
        started_levels, monkeypatch, bind, mode, anonymous, refused):
    monkeypatch.setattr(app_module.app, "auth_mode", mode)
    monkeypatch.setattr(app_module.app, "allow_anonymous", anonymous)
    argv = ["-A", "qastream.app", "worker", "--web-bind", bind]
    pytest_argv = list(sys.argv)
    sys.argv[:] = ["faust", *argv]
    try:
        result = CliRunner().invoke(cli, argv)
    finally:
        sys.argv[:] = pytest_argv
        app_module.app.conf.web_bind = app_module.settings.web_host
    if refused:
        assert result.exit_code == 1 and started_levels == []  # the worker never started
        assert "QASTREAM_AUTH=" in result.output and "QASTREAM_AUTH_ALLOW_ANONYMOUS" in result.output
        assert "Traceback" not in result.output
    else:
        assert result.exit_code == 0, result.output
        assert len(started_levels) == 1
