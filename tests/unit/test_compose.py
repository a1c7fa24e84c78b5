"""The production stack (docker-compose.yml, Dockerfile, .env.example) checked by reading it.

No Docker engine runs here, so what can be wrong without running is checked as
data: unpinned images, ``QASTREAM_*`` variables that are not settings (the
worker would refuse to start), a web port that disagrees with the published
port or the image, missing health checks, topics sized differently from the
settings (``PartitionsMismatch`` / ``TopicLayoutError`` at start-up), secrets
written into the file, and the hardening: what is published, kafka-ui
read-only, Redis's password, qastream's own PostgreSQL role, secrets only from
``.env`` and API keys required.  Each check is a function returning the
problems it found; the last tests feed each one a broken copy to show it fails.
"""

from __future__ import annotations

import configparser
import copy
import dataclasses
import os
import re
import shlex
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from qastream.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
INIT_SCRIPT = ROOT / "config" / "postgres" / "init-app-role.sh"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
SETUP_CFG = ROOT / "setup.cfg"

WORKERS = ("qastream-1", "qastream-2")
INTERNAL = ("kafka", "postgres", "redis", "ollama")
LONG_RUNNING = (*INTERNAL, *WORKERS)
LOOPBACK = ("127.0.0.1", "::1", "localhost")
INIT_DIR = "/docker-entrypoint-initdb.d"
SETTING_VARIABLES = frozenset(env_name(f.name) for f in dataclasses.fields(Settings))
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
ONLY_INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?+][^}]*)?\}")
# ${VAR}, ${VAR:-x}, ${VAR:?msg}, but not the $${VAR} escape (expanded in the container).
INTERPOLATED_NAME = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
# An interpolation with its form: ${VAR:?msg} and ${VAR?msg} stop compose when VAR is unset.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?[^}]*\}")
# scheme://user:password@ with either part possibly empty or an interpolation.
URL_CREDENTIALS = re.compile(r"(\w[\w+.-]*)://((?:\$\{[^}]*\}|[^:/@\s$])*):((?:\$\{[^}]*\}|[^@\s/$])*)@")


# -- reading --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment in either compose form (mapping or ``KEY=value`` list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        result: dict[str, str | None] = {}
        for item in env:
            key, sep, value = str(item).partition("=")
            result[key.strip()] = value if sep else None
        return result
    return {str(key): None if value is None else str(value) for key, value in env.items()}


def container_ports(service: dict[str, Any]) -> list[int]:
    """Container side of every published port, short (``[ip:]host:container[/proto]``) or long form."""
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.append(int(entry["target"]))
        else:
            ports.append(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(host address, host port, container port) of every published port; ``""`` means all interfaces
    or a random host port.  Short (``[ip:][host:]container[/proto]``, ``[::1]:h:c``) or long form."""
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.append((str(entry.get("host_ip", "")), str(entry.get("published", "")), int(entry["target"])))
            continue
        text = str(entry).split("/")[0]
        address = ""
        if text.startswith("["):
            address, _, text = text[1:].partition("]:")
        parts = text.split(":")
        if len(parts) == 3:
            address, parts = parts[0], parts[1:]
        ports.append((address, parts[0] if len(parts) == 2 else "", int(parts[-1])))
    return ports


def interpolated(value: str | None) -> str | None:
    """The variable a value takes whole from ``.env`` (``${VAR}`` in any form), else None."""
    match = INTERPOLATION.fullmatch(value or "")
    return match.group(1) if match else None


def required_interpolation(value: str | None) -> bool:
    """``${VAR:?msg}`` or ``${VAR?msg}``: compose refuses to start without VAR; no default stands in."""
    match = INTERPOLATION.fullmatch(value or "")
    return bool(match) and (match.group(2) or "").endswith("?")


def url_credentials(url: str) -> tuple[str, str] | None:
    """(user, password) of a URL, as written (interpolations unexpanded)."""
    match = URL_CREDENTIALS.match(url or "")
    return (match.group(2), match.group(3)) if match else None


def host_ports(service: dict[str, Any]) -> list[int]:
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.append(int(entry["published"]))
        else:
            parts = str(entry).split("/")[0].split(":")
            ports.append(int(parts[-2]) if len(parts) >= 2 else int(parts[-1]))
    return ports


def command_text(service: dict[str, Any]) -> str:
    parts = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if isinstance(value, list):
            parts.extend(str(v) for v in value)
        elif value is not None:
            parts.append(str(value))
    return "\n".join(parts)


def all_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from all_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_strings(item)
    elif node is not None:
        yield str(node)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            keyword, _, args = whole.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


def expected_topics(settings: Settings) -> dict[str, int]:
    """Topic name -> partitions from the settings: every ``topic_X`` with its ``partitions_X``."""
    names = {f.name for f in dataclasses.fields(Settings)}
    topics = {}
    for name in sorted(names):
        if name.startswith("topic_") and name != "topic_prefix":
            suffix = name.removeprefix("topic_")
            assert f"partitions_{suffix}" in names, f"{name} has no partitions_{suffix} setting"
            topics[settings.topic_name(getattr(settings, name))] = getattr(settings, f"partitions_{suffix}")
    return topics


def created_topics(text: str) -> dict[str, int]:
    """Topics and partition counts of the ``kafka-topics.sh --create`` lines in a shell script."""
    topics: dict[str, int] = {}
    for line in text.splitlines():
        if "kafka-topics" not in line or "--create" not in line:
            continue
        tokens = shlex.split(line)
        options: dict[str, str] = {}
        for i, token in enumerate(tokens):
            if token.startswith("--") and "=" in token:
                key, value = token.split("=", 1)
                options[key] = value
            elif token.startswith("--") and i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                options[token] = tokens[i + 1]
        assert "--if-not-exists" in tokens, f"not idempotent: {line.strip()}"
        topics[options["--topic"]] = int(options["--partitions"])
    return topics


def image_is_pinned(image: str) -> bool:
    """A digest, or a tag other than ``latest`` (a registry port is not a tag)."""
    if "@sha256:" in image:
        return True
    name, sep, tag = image.rpartition(":")
    return bool(sep) and "/" not in tag and tag not in ("", "latest")


# -- checks: each returns the problems it found --------------------------------------


def unpinned_images(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        image = service.get("image")
        if not image or not image_is_pinned(str(image)):
            problems.append(f"{name}: image {image!r} is not pinned")
    return problems


def unknown_settings(compose: dict[str, Any]) -> list[str]:
    return [f"{name}: {key} is not a qastream setting"
            for name, service in compose["services"].items()
            for key in environment(service)
            if key.startswith("QASTREAM_") and key not in SETTING_VARIABLES]


def worker_port_problems(compose: dict[str, Any], exposed: set[int]) -> list[str]:
    problems = []
    published: dict[int, str] = {}
    for name in WORKERS:
        service = compose["services"].get(name)
        if service is None:
            problems.append(f"{name}: missing")
            continue
        env = environment(service)
        port = int(env.get("QASTREAM_WEB_PORT") or Settings().web_port)
        targets = container_ports(service)
        if not targets:
            problems.append(f"{name}: publishes no port")
        problems += [f"{name}: publishes container port {t}, QASTREAM_WEB_PORT is {port}"
                     for t in targets if t != port]
        if port not in exposed:
            problems.append(f"{name}: QASTREAM_WEB_PORT {port} is not EXPOSEd by the Dockerfile ({exposed})")
        if env.get("QASTREAM_WEB_HOST") != name:
            problems.append(f"{name}: QASTREAM_WEB_HOST is {env.get('QASTREAM_WEB_HOST')!r}, other workers "
                            f"route to it by service name {name!r}")
        for host_port in host_ports(service):
            if host_port in published:
                problems.append(f"{name}: host port {host_port} already used by {published[host_port]}")
            published[host_port] = name
    return problems


def healthcheck_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name in LONG_RUNNING:
        check = (compose["services"].get(name) or {}).get("healthcheck") or {}
        test = check.get("test")
        if check.get("disable") or not test or test in (["NONE"], "NONE"):
            problems.append(f"{name}: no healthcheck")
            continue
        text = " ".join(test) if isinstance(test, list) else str(test)
        if name in WORKERS and "/metrics" not in text:
            problems.append(f"{name}: healthcheck does not hit /metrics: {text}")
    return problems


def topic_problems(compose: dict[str, Any], settings: Settings) -> list[str]:
    init = compose["services"].get("kafka-init")
    if init is None:
        return ["kafka-init: missing"]
    created = created_topics(command_text(init))
    expected = expected_topics(settings)
    problems = [f"kafka-init: {topic} created with {created.get(topic)} partitions, settings say {want}"
                for topic, want in expected.items() if created.get(topic) != want]
    problems += [f"kafka-init: creates {topic}, which is no qastream topic" for topic in created.keys() - expected.keys()]
    return problems


def secret_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if SECRET_KEY.search(key) and value is not None and not ONLY_INTERPOLATION.fullmatch(value):
                problems.append(f"{name}: {key} holds a literal value; take it from .env with ${{{key}}}")
    for text in all_strings(compose):
        # The password part of any URL must be one ${...} and nothing else.
        masked = ONLY_INTERPOLATION.sub("${}", text)
        # The user may be empty: redis://:password@host.
        for match in re.finditer(r"://[^:/@\s]*:([^@\s/]*)@", masked):
            if match.group(1) != "${}":
                problems.append(f"literal password in URL {text!r}")
    return problems


def published_port_problems(compose: dict[str, Any]) -> list[str]:
    """Only the workers' API port reaches the host, on loopback (a TLS proxy fronts it), and kafka-ui
    on loopback: every other port would be a way round the API keys."""
    problems = []
    for name, service in compose["services"].items():
        if service.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host publishes every port it listens on")
        for address, host_port, target in published_ports(service):
            if name in WORKERS:
                port = int(environment(service).get("QASTREAM_WEB_PORT") or Settings().web_port)
                if target != port:
                    problems.append(f"{name}: publishes {target}, which is not its API port {port}")
            elif name != "kafka-ui":
                problems.append(f"{name}: publishes {target}; only the workers' API and kafka-ui may be published")
            if address not in LOOPBACK:
                problems.append(f"{name}: port {target} published on {address or 'every interface'} (host port "
                                f"{host_port or 'random'}), not on loopback: outside it, a TLS proxy fronts the API")
    return problems


def internal_service_problems(compose: dict[str, Any]) -> list[str]:
    """Kafka, PostgreSQL, Redis and Ollama: reachable on the compose network only."""
    problems = []
    for name in INTERNAL:
        service = compose["services"].get(name)
        if service is None:
            problems.append(f"{name}: missing")
            continue
        if service.get("ports"):
            problems.append(f"{name}: publishes {service['ports']}; internal services publish nothing")
        if service.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host puts it on the host's interfaces")
    return problems


def kafka_ui_problems(compose: dict[str, Any]) -> list[str]:
    service = compose["services"].get("kafka-ui")
    if service is None:
        return []  # no UI is no exposure
    problems = []
    if str(environment(service).get("KAFKA_CLUSTERS_0_READONLY")).lower() != "true":
        problems.append("kafka-ui: KAFKA_CLUSTERS_0_READONLY is not \"true\": the UI could produce, delete "
                        "topics and reset offsets, without authentication")
    ports = published_ports(service)
    problems += [f"kafka-ui: published on {address or 'every interface'}, not loopback"
                 for address, _, _ in ports if address not in LOOPBACK]
    return problems


def redis_problems(compose: dict[str, Any]) -> list[str]:
    """Redis requires a password from .env, its health check uses it, and every Redis URL carries it."""
    service = compose["services"].get("redis")
    if service is None:
        return ["redis: missing"]
    problems = []
    command = service.get("command") or []
    args = [str(a) for a in command] if isinstance(command, list) else shlex.split(str(command))
    password_var = None
    if "--requirepass" in args and args.index("--requirepass") + 1 < len(args):
        value = args[args.index("--requirepass") + 1]
        password_var = interpolated(value)
        if not required_interpolation(value):
            problems.append(f"redis: --requirepass {value!r} is not ${{VAR:?message}} from .env")
    else:
        problems.append("redis: started without --requirepass: anyone on the network reads the cache")
    test = (service.get("healthcheck") or {}).get("test") or []
    text = " ".join(test) if isinstance(test, list) else str(test)
    authenticates = (password_var is not None
                     and interpolated(environment(service).get("REDISCLI_AUTH")) == password_var) or \
        bool(re.search(r"(^|\s)(-a|--pass)\s", text))
    if not authenticates:
        problems.append("redis: the healthcheck sends no password (REDISCLI_AUTH from the --requirepass variable)")
    if "PONG" not in text:
        problems.append("redis: the healthcheck does not look for PONG: a NOAUTH error reply would pass")
    for name, svc in compose["services"].items():
        url = environment(svc).get("QASTREAM_REDIS_URL")
        if not url:
            continue
        credentials = url_credentials(url)
        if credentials is None or password_var is None or interpolated(credentials[1]) != password_var:
            problems.append(f"{name}: QASTREAM_REDIS_URL {url!r} does not carry the Redis password")
    return problems


def _read_repo_file(path: str) -> str | None:
    file = ROOT / path
    return file.read_text() if file.is_file() else None


def _sql(script: str) -> str:
    """The script without comment lines (shell ``#``, SQL ``--``)."""
    return "\n".join(line for line in script.splitlines() if not line.lstrip().startswith(("#", "--")))


def postgres_role_problems(compose: dict[str, Any],
                           read: Callable[[str], str | None] = _read_repo_file) -> list[str]:
    """qastream connects as a role the init script creates, with no superuser, role or database rights."""
    service = compose["services"].get("postgres")
    if service is None:
        return ["postgres: missing"]
    problems = []
    env = environment(service)
    admin_var = interpolated(env.get("POSTGRES_USER"))
    app_var = interpolated(env.get("POSTGRES_APP_USER"))
    if app_var is None or interpolated(env.get("POSTGRES_APP_PASSWORD")) is None:
        problems.append("postgres: POSTGRES_APP_USER / POSTGRES_APP_PASSWORD do not come from .env")
    scripts = []
    for volume in service.get("volumes") or []:
        source, _, target = str(volume).partition(":")
        if target.startswith(INIT_DIR) and source.startswith("./"):
            scripts.append((source, read(source.removeprefix("./"))))
    if not scripts:
        problems.append(f"postgres: no init script mounted into {INIT_DIR}: nobody creates the app role")
    for source, text in scripts:
        if text is None:
            problems.append(f"postgres: {source} does not exist")
            continue
        sql = _sql(text)
        create = re.search(r"CREATE\s+(?:ROLE|USER)\s+(\S+)(.*?);", sql, re.DOTALL | re.IGNORECASE)
        if create is None or "POSTGRES_APP_USER" not in sql:
            problems.append(f"{source}: does not create the role named by POSTGRES_APP_USER")
            continue
        attributes = create.group(2).upper().split()
        missing = [a for a in ("LOGIN", "NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE") if a not in attributes]
        if missing:
            problems.append(f"{source}: the app role lacks {', '.join(missing)}")
        granted = re.findall(r"(?<![A-Z])(SUPERUSER|CREATEDB|CREATEROLE|BYPASSRLS|REPLICATION)\b", sql)
        if granted:
            problems.append(f"{source}: grants {', '.join(sorted(set(granted)))}")
        if re.search(r"GRANT\s+(pg_\w+|\S*postgres\S*)\s+TO", sql, re.IGNORECASE):
            problems.append(f"{source}: makes the app role a member of a privileged role")
    for name, svc in compose["services"].items():
        url = environment(svc).get("QASTREAM_DATABASE_URL")
        if not url or not url.startswith("postgres"):
            continue
        user = (url_credentials(url) or ("", ""))[0]
        if user == "postgres" or (admin_var is not None and interpolated(user) == admin_var):
            problems.append(f"{name}: connects to PostgreSQL as the superuser ({user})")
        elif app_var is None or interpolated(user) != app_var:
            problems.append(f"{name}: QASTREAM_DATABASE_URL user {user!r} is not the app role (${{{app_var}}})")
    return problems


def secret_source_problems(compose: dict[str, Any]) -> list[str]:
    """Every secret comes from .env through ${VAR:?message}: no default stands in for a missing password,
    and no env_file hands a container secrets it does not use."""
    problems = [f"{name}: env_file loads all of .env into the container; interpolate what it needs"
                for name, service in compose["services"].items() if service.get("env_file")]
    for text in all_strings(compose):
        for match in INTERPOLATION.finditer(text):
            if SECRET_KEY.search(match.group(1)) and not (match.group(2) or "").endswith("?"):
                problems.append(f"{match.group(0)}: a secret without ':?' starts with a default or empty")
        credentials = url_credentials(text)
        if credentials and credentials[1] and not required_interpolation(credentials[1]):
            problems.append(f"password in {text!r} is not ${{VAR:?message}}")
    return problems


def auth_problems(compose: dict[str, Any]) -> list[str]:
    """Every worker requires API keys, and its health check survives that."""
    problems = []
    for name in WORKERS:
        service = compose["services"].get(name) or {}
        env = environment(service)
        if env.get("QASTREAM_AUTH") != "required":
            problems.append(f"{name}: QASTREAM_AUTH is {env.get('QASTREAM_AUTH')!r}, not 'required'")
        if str(env.get("QASTREAM_AUTH_ALLOW_ANONYMOUS") or "false").lower() not in ("0", "false", "no", "off"):
            problems.append(f"{name}: QASTREAM_AUTH_ALLOW_ANONYMOUS lets it serve without keys")
        test = (service.get("healthcheck") or {}).get("test") or []
        text = " ".join(test) if isinstance(test, list) else str(test)
        if "/metrics" in text and "401" not in text:
            problems.append(f"{name}: the healthcheck asks /metrics without a key and fails on its 401")
    return problems


# -- the stack as written ----------------------------------------------------------------


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    assert unpinned_images(compose) == []


def test_every_qastream_variable_is_a_setting(compose: dict[str, Any]) -> None:
    assert unknown_settings(compose) == []
    # The workers really are configured through these variables, not by defaults.
    for name in WORKERS:
        assert {"QASTREAM_BROKER_URL", "QASTREAM_BROKER_PROFILE", "QASTREAM_DATABASE_URL", "QASTREAM_REDIS_URL",
                "QASTREAM_OLLAMA_URL", "QASTREAM_OLLAMA_MODEL"} <= environment(compose["services"][name]).keys()


def test_worker_settings_parse(compose: dict[str, Any]) -> None:
    """Settings.from_env accepts each worker's environment (values, choices, ranges)."""
    for name in WORKERS:
        env = {k: v or "" for k, v in environment(compose["services"][name]).items()}
        settings = Settings.from_env(env)
        assert settings.broker_profile == "production"
        assert settings.broker_url == "kafka://kafka:9092"


def test_worker_ports_match_web_port_and_expose(compose: dict[str, Any],
                                                dockerfile: list[tuple[str, str]]) -> None:
    exposed = {int(port.split("/")[0]) for keyword, args in dockerfile if keyword == "EXPOSE" for port in args.split()}
    assert exposed, "the Dockerfile EXPOSEs no port"
    assert worker_port_problems(compose, exposed) == []


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    assert healthcheck_problems(compose) == []


def test_workers_wait_for_the_stack(compose: dict[str, Any]) -> None:
    wanted = {"kafka-init": "service_completed_successfully", "migrate": "service_completed_successfully",
              "ollama-pull": "service_completed_successfully", "postgres": "service_healthy",
              "redis": "service_healthy", "ollama": "service_healthy"}
    for name in WORKERS:
        depends = compose["services"][name]["depends_on"]
        assert {dep: (depends.get(dep) or {}).get("condition") for dep in wanted} == wanted, name
    assert compose["services"]["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert compose["services"]["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_ollama_pull_fetches_the_workers_model(compose: dict[str, Any]) -> None:
    pulled = command_text(compose["services"]["ollama-pull"]).split()
    for name in WORKERS:
        assert environment(compose["services"][name])["QASTREAM_OLLAMA_MODEL"] in pulled


def test_kafka_init_creates_topics_with_settings_partitions(compose: dict[str, Any]) -> None:
    assert len(expected_topics(Settings())) == 10
    assert topic_problems(compose, Settings()) == []


def test_no_literal_secret_in_compose(compose: dict[str, Any]) -> None:
    assert secret_problems(compose) == []
    url = environment(compose["services"]["qastream-1"])["QASTREAM_DATABASE_URL"]
    assert "${POSTGRES_APP_PASSWORD:?" in url
    postgres = environment(compose["services"]["postgres"])
    assert all(required_interpolation(postgres[key]) for key in ("POSTGRES_USER", "POSTGRES_PASSWORD",
                                                                 "POSTGRES_APP_USER", "POSTGRES_APP_PASSWORD"))


def test_secrets_come_only_from_env_interpolation(compose: dict[str, Any]) -> None:
    assert secret_source_problems(compose) == []


def test_env_example_names_every_interpolated_variable() -> None:
    assert ENV_EXAMPLE.is_file()
    values = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_APP_USER", "POSTGRES_APP_PASSWORD",
            "REDIS_PASSWORD"} <= values.keys()
    assert set(INTERPOLATED_NAME.findall(COMPOSE_FILE.read_text())) <= values.keys()
    # Placeholders, never usable secrets; the app role is not the superuser.
    assert all(value.startswith("change-me") for key, value in values.items() if SECRET_KEY.search(key))
    assert values["POSTGRES_APP_USER"] != values["POSTGRES_USER"]


def test_only_the_api_is_published(compose: dict[str, Any]) -> None:
    assert published_port_problems(compose) == []
    assert {name for name, service in compose["services"].items() if service.get("ports")} == {*WORKERS, "kafka-ui"}


def test_internal_services_are_not_published(compose: dict[str, Any]) -> None:
    assert internal_service_problems(compose) == []


def test_kafka_ui_is_loopback_and_read_only(compose: dict[str, Any]) -> None:
    assert "kafka-ui" in compose["services"]
    assert kafka_ui_problems(compose) == []


def test_redis_requires_its_password(compose: dict[str, Any]) -> None:
    assert redis_problems(compose) == []


def test_qastream_connects_as_its_own_role(compose: dict[str, Any]) -> None:
    assert postgres_role_problems(compose) == []
    # The postgres image runs an executable script and sources any other: sourcing would run
    # its `set -eu` in the entrypoint's own shell.
    assert os.access(INIT_SCRIPT, os.X_OK), f"{INIT_SCRIPT} is not executable"
    assert "set -eu" in INIT_SCRIPT.read_text() and "ON_ERROR_STOP=1" in INIT_SCRIPT.read_text()


def test_workers_require_api_keys(compose: dict[str, Any]) -> None:
    assert auth_problems(compose) == []


def test_published_ports_are_parsed_in_every_form() -> None:
    service = {"ports": ["6066", "8080:80", "127.0.0.1:6066:6066/tcp", "[::1]:9000:9000",
                         {"target": 1, "published": "2", "host_ip": "127.0.0.1"}]}
    assert published_ports(service) == [("", "", 6066), ("", "8080", 80), ("127.0.0.1", "6066", 6066),
                                        ("::1", "9000", 9000), ("127.0.0.1", "2", 1)]
    assert url_credentials("redis://:${P:?x}@redis:6379/0") == ("", "${P:?x}")
    assert url_credentials("postgresql+psycopg2://${U:?x}:${P:?x}@postgres/q") == ("${U:?x}", "${P:?x}")
    assert url_credentials("http://ollama:11434") is None
    assert interpolated("${P:-default}") == "P" and not required_interpolation("${P:-default}")
    assert required_interpolation("${P:?set P}") and required_interpolation("${P?set P}")


def test_dockerfile_runs_as_non_root(dockerfile: list[tuple[str, str]]) -> None:
    users = [args for keyword, args in dockerfile if keyword == "USER"]
    assert users, "no USER: the worker would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_base_images_are_pinned(dockerfile: list[tuple[str, str]]) -> None:
    froms = [args for keyword, args in dockerfile if keyword == "FROM"]
    assert froms
    for args in froms:
        image = next(token for token in args.split() if not token.startswith("--"))
        assert image_is_pinned(image), image


def test_dockerfile_installs_cpu_torch_before_the_project(dockerfile: list[tuple[str, str]]) -> None:
    runs = [args for keyword, args in dockerfile if keyword == "RUN"]
    torch_at = next(i for i, args in enumerate(runs) if "pip install" in args and "torch==" in args)
    assert "https://download.pytorch.org/whl/cpu" in runs[torch_at]
    project_at = next(i for i, args in enumerate(runs) if _installs_project(args))
    assert torch_at < project_at
    assert "[" not in runs[project_at], "the production image installs no extras"
    # The same torch version as the package requires, or pip would replace it with a CUDA build.
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG)
    pinned = re.search(r"^\s*torch==(\S+)", cfg["options"]["install_requires"], re.MULTILINE)
    assert pinned and f"torch=={pinned.group(1)}" in runs[torch_at].split()


def test_dockerfile_has_a_healthcheck_on_metrics(dockerfile: list[tuple[str, str]]) -> None:
    checks = [args for keyword, args in dockerfile if keyword == "HEALTHCHECK"]
    assert checks and checks[-1].upper() != "NONE"
    assert "/metrics" in checks[-1]


def _installs_project(run: str) -> bool:
    tokens = shlex.split(run)
    for i in range(len(tokens) - 1):
        if tokens[i] == "pip" and tokens[i + 1] == "install":
            args = []
            for token in tokens[i + 2:]:
                if token in ("&&", ";", "||", "|"):
                    break
                args.append(token)
            return any(a == "." or a.startswith(".[") or a.startswith("./") for a in args)
    return False


# -- the checks can fail --------------------------------------------------------------------


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc["services"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _drop(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc["services"]
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


def _keep(doc: dict[str, Any]) -> None:
    """For checks broken through their other input (the init script)."""


def _script(old: str, new: str) -> Callable[[dict[str, Any]], list[str]]:
    """postgres_role_problems reading an init script with ``old`` replaced by ``new``."""
    text = INIT_SCRIPT.read_text()
    assert old in text, old
    return lambda doc: postgres_role_problems(doc, read=lambda path: text.replace(old, new))


def _rewrite_init(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        init = doc["services"]["kafka-init"]
        init["command"] = [c.replace(old, new) for c in init["command"]] if isinstance(init["command"], list) \
            else init["command"].replace(old, new)
    return mutate


BROKEN = {
    "image without tag": (unpinned_images, _set(("redis", "image"), "redis")),
    "image on latest": (unpinned_images, _set(("postgres", "image"), "postgres:latest")),
    "registry port is no tag": (unpinned_images, _set(("redis", "image"), "registry.local:5000/redis")),
    "misspelt setting (mapping)": (unknown_settings, _set(("qastream-1", "environment", "QASTREAM_WEB_PROT"), "1")),
    "misspelt setting (list)": (unknown_settings, _set(("migrate", "environment"), ["QASTREAM_DATABSE_URL=x"])),
    "web port differs": (lambda d: worker_port_problems(d, {6066}),
                         _set(("qastream-2", "environment", "QASTREAM_WEB_PORT"), "7000")),
    "published to the wrong port": (lambda d: worker_port_problems(d, {6066}), _set(("qastream-1", "ports"), ["6066:80"])),
    "same host port twice": (lambda d: worker_port_problems(d, {6066}), _set(("qastream-2", "ports"), ["6066:6066"])),
    "loopback web host": (lambda d: worker_port_problems(d, {6066}),
                          _set(("qastream-1", "environment", "QASTREAM_WEB_HOST"), "127.0.0.1")),
    "no healthcheck": (healthcheck_problems, _set(("redis", "healthcheck"), {"disable": True})),
    "worker checks another page": (healthcheck_problems,
                                   _set(("qastream-2", "healthcheck"), {"test": ["CMD", "true"]})),
    "wrong partition count": (lambda d: topic_problems(d, Settings()),
                              _rewrite_init("--topic question-events --partitions 3",
                                            "--topic question-events --partitions 6")),
    "missing topic": (lambda d: topic_problems(d, Settings()),
                      _rewrite_init("--topic validated-responses", "--topic validated")),
    "literal password": (secret_problems, _set(("postgres", "environment", "POSTGRES_PASSWORD"), "hunter2")),
    "literal password in a URL": (secret_problems,
                                  _set(("migrate", "environment"),
                                       {"QASTREAM_DATABASE_URL": "postgresql://qastream:hunter2@postgres/qastream"})),
    "literal password in a Redis URL": (secret_problems,
                                        _set(("qastream-1", "environment", "QASTREAM_REDIS_URL"),
                                             "redis://:hunter2@redis:6379/0")),
    # only the API is published
    "worker publishes a second port": (published_port_problems,
                                       _set(("qastream-1", "ports"), ["127.0.0.1:6066:6066", "127.0.0.1:5678:5678"])),
    "worker on every interface": (published_port_problems, _set(("qastream-2", "ports"), ["6067:6066"])),
    "worker on a public address": (published_port_problems, _set(("qastream-2", "ports"), ["203.0.113.7:6067:6066"])),
    "another service publishes": (published_port_problems,
                                  _set(("debug",), {"image": "busybox:1.36", "ports": ["127.0.0.1:9000:9000"]})),
    "a job on the host network": (published_port_problems, _set(("migrate", "network_mode"), "host")),
    # internal services
    "kafka published": (internal_service_problems, _set(("kafka", "ports"), ["127.0.0.1:29092:29092"])),
    "postgres published": (internal_service_problems, _set(("postgres", "ports"), ["5432:5432"])),
    "redis published (long form)": (internal_service_problems,
                                    _set(("redis", "ports"), [{"target": 6379, "published": "6379"}])),
    "ollama on the host network": (internal_service_problems, _set(("ollama", "network_mode"), "host")),
    # kafka-ui
    "kafka-ui on every interface": (kafka_ui_problems, _set(("kafka-ui", "ports"), ["8080:8080"])),
    "kafka-ui writable": (kafka_ui_problems, _set(("kafka-ui", "environment", "KAFKA_CLUSTERS_0_READONLY"), "false")),
    "kafka-ui read-only unset": (kafka_ui_problems, _drop(("kafka-ui", "environment", "KAFKA_CLUSTERS_0_READONLY"))),
    # redis
    "redis without a password": (redis_problems, _set(("redis", "command"), ["redis-server"])),
    "redis password with a default": (redis_problems,
                                      _set(("redis", "command"), ["redis-server", "--requirepass", "${REDIS_PASSWORD:-x}"])),
    "redis healthcheck without the password": (redis_problems, _drop(("redis", "environment", "REDISCLI_AUTH"))),
    "redis healthcheck trusts the exit status": (redis_problems,
                                                 _set(("redis", "healthcheck", "test"), ["CMD", "redis-cli", "ping"])),
    "app's Redis URL without the password": (redis_problems,
                                             _set(("qastream-2", "environment", "QASTREAM_REDIS_URL"),
                                                  "redis://redis:6379/0")),
    # postgres role
    "app connects as the superuser": (postgres_role_problems,
                                      _set(("qastream-1", "environment", "QASTREAM_DATABASE_URL"),
                                           "postgresql+psycopg2://${POSTGRES_USER:?x}:${POSTGRES_PASSWORD:?x}@postgres/qastream")),
    "app connects as postgres": (postgres_role_problems,
                                 _set(("migrate", "environment"), {"QASTREAM_DATABASE_URL":
                                                                   "postgresql://postgres:${P:?x}@postgres/qastream"})),
    "no init script": (postgres_role_problems, _set(("postgres", "volumes"), ["postgres-data:/var/lib/postgresql/data"])),
    "init script missing from the tree": (postgres_role_problems,
                                          _set(("postgres", "volumes"), ["./config/postgres/nope.sh:/docker-entrypoint-initdb.d/a.sh"])),
    "app role as superuser": (_script("NOSUPERUSER ", "SUPERUSER "), _keep),
    "app role may create roles": (_script("NOCREATEROLE", ""), _keep),
    "app role altered to createdb": (_script("REVOKE ALL", "ALTER ROLE :\"app_user\" CREATEDB;\nREVOKE ALL"), _keep),
    "app role in pg_read_all_data": (_script("REVOKE ALL", "GRANT pg_read_all_data TO :\"app_user\";\nREVOKE ALL"), _keep),
    # secrets only from .env
    "env_file": (secret_source_problems, _set(("postgres", "env_file"), ".env")),
    "secret with a default": (secret_source_problems,
                              _set(("postgres", "environment", "POSTGRES_PASSWORD"), "${POSTGRES_PASSWORD:-postgres}")),
    "URL password that may be empty": (secret_source_problems,
                                       _set(("qastream-1", "environment", "QASTREAM_REDIS_URL"),
                                            "redis://:${REDIS_PASSWORD}@redis:6379/0")),
    # API keys
    "auth off": (auth_problems, _set(("qastream-1", "environment", "QASTREAM_AUTH"), "off")),
    "auth unset": (auth_problems, _drop(("qastream-2", "environment", "QASTREAM_AUTH"))),
    "anonymous allowed": (auth_problems, _set(("qastream-2", "environment", "QASTREAM_AUTH_ALLOW_ANONYMOUS"), "true")),
    "healthcheck fails on 401": (auth_problems, _set(("qastream-1", "healthcheck"),
                                                     {"test": ["CMD", "python", "-c", "import urllib.request; "
                                                               "urllib.request.urlopen('http://qastream-1:6066/metrics')"]})),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_catches(case: str, compose: dict[str, Any]) -> None:
    check, mutate = BROKEN[case]
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert check(broken), f"{case}: not detected"


def test_topic_check_follows_the_settings(compose: dict[str, Any]) -> None:
    assert topic_problems(compose, Settings(partitions_pending=4)) != []
    assert topic_problems(compose, Settings(topic_prefix="t-")) != []


def test_dockerfile_checks_catch_mistakes() -> None:
    root = dockerfile_instructions("FROM python:3.11\nRUN pip install .\nRUN pip install torch==2.13.0 \\\n  --index-url x\n")
    assert [k for k, _ in root] == ["FROM", "RUN", "RUN"] and not any(k == "USER" for k, _ in root)
    assert _installs_project("pip install . && rm -rf /src") and not _installs_project("pip install torch==1")
    assert not image_is_pinned("python") and not image_is_pinned("python:latest")
    assert image_is_pinned("python@sha256:abc") and image_is_pinned("python:3.11.7-slim-bookworm")
