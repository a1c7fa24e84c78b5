"""qastream.settings: defaults, fail-fast parsing that names the variable, and the generated defaults file."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qastream.settings import PREFIX, Settings, SettingsError, env_name, render_env_file

REPO = Path(__file__).parents[2]
DEFAULTS_ENV = REPO / "config" / "defaults.env"


def test_defaults_load_from_an_empty_mapping():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.broker_profile == "development"
    assert settings.web_port == 6066
    assert settings.scorer_enabled is True
    assert settings.overload_delays() == (2.0, 4.0, 8.0)


def test_other_environment_variables_are_ignored():
    assert Settings.from_env({"HOME": "/root", "QASTREAMX": "1", "qastream_web_port": "x"}) == Settings()


@pytest.mark.parametrize("name, raw, field, value", [
    ("QASTREAM_WEB_PORT", "8080", "web_port", 8080),
    ("QASTREAM_WEB_PORT", " 8080 ", "web_port", 8080),
    ("QASTREAM_WEB_PORT", "65535", "web_port", 65535),
    ("QASTREAM_WEB_PORT", "1", "web_port", 1),
    ("QASTREAM_LLM_TIMEOUT_SECONDS", "2.5", "llm_timeout_seconds", 2.5),
    ("QASTREAM_LLM_TIMEOUT_SECONDS", "3", "llm_timeout_seconds", 3.0),
    ("QASTREAM_SCORER_THRESHOLD", "-1", "scorer_threshold", -1.0),
    ("QASTREAM_SCORER_THRESHOLD", "1.0", "scorer_threshold", 1.0),
    ("QASTREAM_RETRY_QUOTA_MAX", "0", "retry_quota_max", 0),
    ("QASTREAM_BROKER_PROFILE", "production", "broker_profile", "production"),
    ("QASTREAM_LOG_LEVEL", "debug", "log_level", "debug"),
    ("QASTREAM_TOPIC_PREFIX", "t1-", "topic_prefix", "t1-"),
    ("QASTREAM_DATABASE_URL", "postgresql://u@h/db", "database_url", "postgresql://u@h/db"),
])
def test_values_are_parsed_by_field_type(name, raw, field, value):
    settings = Settings.from_env({name: raw})
    assert getattr(settings, field) == value
    assert type(getattr(settings, field)) is type(value)


@pytest.mark.parametrize("raw, value", [
    ("1", True), ("true", True), ("TRUE", True), ("True", True), ("yes", True), ("on", True), (" on ", True),
    ("0", False), ("false", False), ("False", False), ("no", False), ("NO", False), ("off", False),
])
def test_bool_parsing(raw, value):
    assert Settings.from_env({"QASTREAM_SCORER_ENABLED": raw}).scorer_enabled is value


@pytest.mark.parametrize("name, raw", [
    ("QASTREAM_WEB_PORT", "abc"),                 # bad int
    ("QASTREAM_WEB_PORT", "80.5"),
    ("QASTREAM_WEB_PORT", ""),
    ("QASTREAM_LLM_CONCURRENCY", "true"),
    ("QASTREAM_LLM_TIMEOUT_SECONDS", "fast"),     # bad float
    ("QASTREAM_LLM_TIMEOUT_SECONDS", ""),
    ("QASTREAM_SCORER_ENABLED", "maybe"),         # bad bool
    ("QASTREAM_SCORER_ENABLED", "2"),
    ("QASTREAM_SCORER_ENABLED", ""),
    ("QASTREAM_WEB_PORT", "0"),                   # out-of-range port
    ("QASTREAM_WEB_PORT", "65536"),
    ("QASTREAM_WEB_PORT", "-1"),
    ("QASTREAM_BROKER_PROFILE", "staging"),       # bad choice
    ("QASTREAM_BROKER_PROFILE", "Production"),
    ("QASTREAM_BROKER_PROFILE", ""),
    ("QASTREAM_LOG_LEVEL", "verbose"),
    ("QASTREAM_LLM_CONCURRENCY", "0"),            # below minimum
    ("QASTREAM_PARTITIONS_PENDING", "0"),
    ("QASTREAM_LLM_TIMEOUT_SECONDS", "0.05"),
    ("QASTREAM_LLM_TEMPERATURE", "-0.1"),
    ("QASTREAM_RETRY_QUOTA_MAX", "-1"),
    ("QASTREAM_SCORER_THRESHOLD", "1.5"),         # above maximum
    ("QASTREAM_SCORER_THRESHOLD", "-1.01"),
    ("QASTREAM_RETRY_OVERLOAD_DELAYS", "2,four,8"),  # bad overload delays list
    ("QASTREAM_RETRY_OVERLOAD_DELAYS", "2;4;8"),
    ("QASTREAM_RETRY_OVERLOAD_DELAYS", "-1,2"),
])
def test_bad_value_raises_naming_the_variable(name, raw):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: raw})
    assert name in str(info.value)


def test_bad_value_message_shows_the_value():
    with pytest.raises(SettingsError, match=r"QASTREAM_WEB_PORT: expected an integer, got 'abc'"):
        Settings.from_env({"QASTREAM_WEB_PORT": "abc"})


@pytest.mark.parametrize("env", [
    {"QASTREAM_NOPE": "1"},
    {"QASTREAM_WEB_PROT": "8080"},                           # a typo must not be ignored
    {"QASTREAM_WEB_PORT": "8080", "QASTREAM_NOPE": ""},
])
def test_unknown_variable_raises_naming_it(env):
    unknown = next(k for k in env if k in ("QASTREAM_NOPE", "QASTREAM_WEB_PROT"))
    with pytest.raises(SettingsError, match=unknown):
        Settings.from_env(env)


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)


@pytest.mark.parametrize("raw, delays", [
    ("2,4,8", (2.0, 4.0, 8.0)),
    ("1, 2 ,3", (1.0, 2.0, 3.0)),
    ("0.5", (0.5,)),
    ("1,,2,", (1.0, 2.0)),
    ("", ()),
])
def test_overload_delays(raw, delays):
    assert Settings.from_env({"QASTREAM_RETRY_OVERLOAD_DELAYS": raw}).overload_delays() == delays


@pytest.mark.parametrize("name, raw", [
    ("QASTREAM_SCORER_THRESHOLD", "nan"),
    ("QASTREAM_LLM_TIMEOUT_SECONDS", "nan"),
    ("QASTREAM_RETRY_OVERLOAD_DELAYS", "nan,4"),
])
def test_nan_is_rejected(name, raw):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: raw})


def test_env_name():
    assert env_name("web_port") == "QASTREAM_WEB_PORT"
    assert all(env_name(f.name).startswith(PREFIX) for f in dataclasses.fields(Settings))


@pytest.mark.parametrize("prefix, database_url, data_dir, topic, url", [
    ("", "", "var", "questions-pending", f"sqlite:///{os.path.abspath('var/qastream.db')}"),
    ("t1-", "postgresql://u@h/db", "var", "t1-questions-pending", "postgresql://u@h/db"),
])
def test_topic_name_and_database_url(prefix, database_url, data_dir, topic, url):
    settings = Settings.from_env({"QASTREAM_TOPIC_PREFIX": prefix, "QASTREAM_DATABASE_URL": database_url,
                                  "QASTREAM_DATA_DIR": data_dir})
    assert settings.topic_name("questions-pending") == topic
    assert settings.resolved_database_url() == url


# -- config/defaults.env ---------------------------------------------------------------------------------------

def test_defaults_env_documents_every_setting_with_its_default():
    text = render_env_file()
    for f in dataclasses.fields(Settings):
        default = str(f.default).lower() if isinstance(f.default, bool) else f.default
        assert f"\n{env_name(f.name)}={default}\n" in text
        assert f"# {f.metadata['doc']}\n{env_name(f.name)}=" in text


def test_defaults_env_round_trips_through_from_env():
    pairs = dict(line.split("=", 1) for line in render_env_file().splitlines() if line and not line.startswith("#"))
    assert Settings.from_env(pairs) == Settings()


def test_defaults_env_content_matches_render_env_file():
    """Content check that ignores trailing blank lines (see the exact check below)."""
    assert DEFAULTS_ENV.read_text().rstrip("\n") == render_env_file().rstrip("\n")


def test_defaults_env_equals_render_env_file_exactly():
    assert DEFAULTS_ENV.read_text() == render_env_file()


def test_documented_generator_command_reproduces_defaults_env(tmp_path):
    """The command named in the file's header prints the file (it adds one newline: see the exact check above)."""
    header = render_env_file().splitlines()[0]
    command = header.split("`")[1].split()
    assert command[0] == "qastream"
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    out = subprocess.run([sys.executable, "-m", "qastream", *command[1:]], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == DEFAULTS_ENV.read_text()


def test_events_and_pending_partitions_must_match():
    with pytest.raises(SettingsError, match="QASTREAM_PARTITIONS_EVENTS"):
        Settings.from_env({"QASTREAM_PARTITIONS_EVENTS": "4"})
    assert Settings.from_env({"QASTREAM_PARTITIONS_EVENTS": "6", "QASTREAM_PARTITIONS_PENDING": "6",
                              "QASTREAM_PARTITIONS_BULK": "6"}).partitions_events == 6


def test_the_bulk_lane_is_co_partitioned_with_pending():
    with pytest.raises(SettingsError, match="QASTREAM_PARTITIONS_BULK"):
        Settings.from_env({"QASTREAM_PARTITIONS_BULK": "4"})


@pytest.mark.parametrize("raw, urls", [
    ("http://127.0.0.1:11434", ("http://127.0.0.1:11434",)),
    ("http://a:1, https://b.example/ ,http://c", ("http://a:1", "https://b.example", "http://c")),
])
def test_ollama_url_is_a_list_of_servers(raw, urls):
    assert Settings.from_env({"QASTREAM_OLLAMA_URL": raw}).llm_urls() == urls


@pytest.mark.parametrize("raw", ["", "http://a:1,", "127.0.0.1:11434", "ftp://a:1", "http://", "http://a:99999",
                                 "http://a:x", "http://a:1,http://a:1"])
def test_a_bad_server_list_names_the_variable(raw):
    with pytest.raises(SettingsError, match="QASTREAM_OLLAMA_URL"):
        Settings.from_env({"QASTREAM_OLLAMA_URL": raw})
