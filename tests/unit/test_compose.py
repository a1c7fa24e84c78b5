"""The production stack (docker-compose.yml, Dockerfile, .env.example) checked by reading it.

No Docker engine runs here, so what can be wrong without running is checked as
data: unpinned images, ``QASTREAM_*`` variables that are not settings (the
worker would refuse to start), a web port that disagrees with the published
port or the image, missing health checks, topics sized differently from the
settings (``PartitionsMismatch`` / ``TopicLayoutError`` at start-up) and
secrets written into the file.  Each check is a function returning the
problems it found; the last tests feed each one a broken copy to show it fails.
"""

from __future__ import annotations

import configparser
import copy
import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from qastream.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
SETUP_CFG = ROOT / "setup.cfg"

WORKERS = ("qastream-1", "qastream-2")
LONG_RUNNING = ("kafka", "postgres", "redis", "ollama", *WORKERS)
SETTING_VARIABLES = frozenset(env_name(f.name) for f in dataclasses.fields(Settings))
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
ONLY_INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?+][^}]*)?\}")
# ${VAR}, ${VAR:-x}, ${VAR:?msg}, but not the $${VAR} escape (expanded in the container).
INTERPOLATED_NAME = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


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
        for match in re.finditer(r"://[^:/@\s]+:([^@\s/]*)@", masked):
            if match.group(1) != "${}":
                problems.append(f"literal password in URL {text!r}")
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
    assert len(expected_topics(Settings())) == 8
    assert topic_problems(compose, Settings()) == []


def test_no_literal_secret_in_compose(compose: dict[str, Any]) -> None:
    assert secret_problems(compose) == []
    url = environment(compose["services"]["qastream-1"])["QASTREAM_DATABASE_URL"]
    assert "${POSTGRES_PASSWORD" in url
    postgres = compose["services"]["postgres"]
    assert "POSTGRES_PASSWORD" not in environment(postgres) or ONLY_INTERPOLATION.fullmatch(
        environment(postgres)["POSTGRES_PASSWORD"] or "")
    assert postgres.get("env_file") in (".env", [".env"], [{"path": ".env"}])


def test_env_example_names_every_interpolated_variable() -> None:
    assert ENV_EXAMPLE.is_file()
    defined = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD"} <= defined
    assert set(INTERPOLATED_NAME.findall(COMPOSE_FILE.read_text())) <= defined


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
