"""Every setting qastream reads, from ``QASTREAM_*`` environment variables.

One frozen dataclass is the single source of truth: each field carries its
environment variable name (``QASTREAM_`` + the field name upper-cased), its
default and a one-line doc.  ``config/defaults.env`` and the README's settings
table are rendered from it (``qastream settings``) and a test keeps them in
sync, so documentation cannot drift from code.

A bad value fails fast at start-up with a message that names the variable:
a worker that silently falls back to a default is worse than one that refuses
to start.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from qastream.errors import PermanentError
from qastream.policy.webhook_targets import parse_allowed_hosts
from qastream.policy.webhooks import Backoff

PREFIX = "QASTREAM_"


class SettingsError(PermanentError, ValueError):
    """A ``QASTREAM_*`` variable holds a value qastream cannot use.

    Raised by :meth:`Settings.from_env` and the checks it runs, before anything
    starts: the process stops and names the variable.  Still a ``ValueError``
    for callers that catch that.
    """


def _setting(default: Any, doc: str, *, choices: tuple[str, ...] = (), minimum: float | None = None,
             maximum: float | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "choices": choices, "min": minimum, "max": maximum})


@dataclass(frozen=True)
class Settings:
    """Runtime configuration.  Build it with :meth:`from_env`."""

    # -- identity and broker -------------------------------------------------
    app_id: str = _setting("qastream", "Faust app id: the consumer group and the prefix of table changelog topics.")
    broker_url: str = _setting("kafka://127.0.0.1:9092", "Kafka bootstrap servers, `kafka://host:port[;host:port]`.")
    broker_profile: str = _setting(
        "development",
        "`development` applies the settings the embedded Tansu broker needs (DESIGN §4); "
        "`production` is for Apache Kafka.",
        choices=("development", "production"),
    )
    data_dir: str = _setting("var", "Directory for the worker's local state and the default SQLite file.")
    log_level: str = _setting("info", "Log level of workers and commands.",
                              choices=("debug", "info", "warning", "error"))
    fetch_max_wait_seconds: float = _setting(
        0.1, "Longest the broker may hold a fetch that finds no new data (Faust fixes it at 1.5 s). Kafka answers "
             "as soon as data arrives, so this only sets how often an idle worker asks; Tansu holds the fetch for "
             "the whole wait, so it is the latency of every hop between stages.", minimum=0.01)
    stream_buffer_maxsize: int = _setting(
        4096, "Messages Faust buffers per agent stream (its `stream_buffer_maxsize`); each fetch hands over at most "
              "a fraction of it, so a full bulk buffer never holds up the interactive lane (qastream.streaming."
              "broker.max_poll_records).", minimum=16)

    # -- topics ----------------------------------------------------------------
    topic_prefix: str = _setting("", "Prefix added to every topic name (isolates test runs and tenants).")
    topic_pending: str = _setting("questions-pending", "Questions waiting for an LLM generation.")
    topic_bulk: str = _setting("questions-bulk", "Bulk-lane (batch) questions waiting for an LLM generation; "
                                                 "served only when no interactive question waits.")
    topic_success: str = _setting("llm-responses-success", "LLM answers waiting to be scored.")
    topic_overload: str = _setting("llm-responses-error-overload", "Transient LLM failures (503, time-outs).")
    topic_quota: str = _setting("llm-responses-error-quota", "Quota failures (429).")
    topic_permanent: str = _setting("llm-responses-error-permanent", "Dead letters: failures that will not heal.")
    topic_validated: str = _setting("validated-responses", "Scored answers ready to be stored.")
    topic_low_quality: str = _setting("low-quality-responses", "Answers below the threshold, to regenerate.")
    topic_events: str = _setting("question-events", "Status events folded into the status and attempts tables.")
    partitions_pending: int = _setting(3, "Partitions of the pending topic.", minimum=1)
    partitions_bulk: int = _setting(
        3, "Partitions of the bulk topic (must equal partitions_pending: the generate stage reads both lanes' "
           "keys from the same local status partitions).", minimum=1)
    partitions_success: int = _setting(3, "Partitions of the success topic.", minimum=1)
    partitions_overload: int = _setting(2, "Partitions of the overload topic.", minimum=1)
    partitions_quota: int = _setting(2, "Partitions of the quota topic.", minimum=1)
    partitions_permanent: int = _setting(1, "Partitions of the dead-letter topic.", minimum=1)
    partitions_validated: int = _setting(3, "Partitions of the validated topic.", minimum=1)
    partitions_low_quality: int = _setting(1, "Partitions of the low-quality topic.", minimum=1)
    partitions_events: int = _setting(
        3, "Partitions of the events topic and of the tables it writes (must equal partitions_pending so the "
           "generate stage reads its keys locally).", minimum=1)

    # -- storage and cache -------------------------------------------------------
    database_url: str = _setting("", "SQLAlchemy URL; empty means the SQLite file `<data_dir>/qastream.db`.")
    redis_url: str = _setting("", "Redis URL for the answer cache and the API keys' rate limits, shared by every "
                                  "worker; empty means an in-process cache and per-worker limits.")
    cache_ttl_seconds: int = _setting(86400, "Time to live of cached answers.", minimum=1)
    cache_max_bytes: int = _setting(
        16 * 2**20, "Most bytes of answers (their JSON, plus ~200 bytes each) the in-process cache holds, used when no "
                    "Redis URL is set; the oldest go first, so a worker's memory does not grow with the number of "
                    "questions ever answered. 16 MiB holds ~30,000 typical answers.", minimum=1024)
    store_batch_size: int = _setting(200, "Most answers written to the database in one transaction.", minimum=1)
    db_connect_timeout_seconds: int = _setting(
        5, "Longest wait to open a PostgreSQL connection (libpq `connect_timeout`, also TCP keepalive and "
           "`tcp_user_timeout`): without it a blackholed database host holds requests ~2 min.", minimum=2)
    db_statement_timeout_seconds: float = _setting(
        5.0, "Longest a database statement may run (PostgreSQL `statement_timeout`; SQLite lock wait) and "
              "longest POST /query waits on the database before answering 503.", minimum=0.1)
    redis_timeout_seconds: float = _setting(
        0.5, "Redis connect and read time-out: a cache is only worth asking when it answers fast; past it the "
             "request goes on without the cache.", minimum=0.01)
    cache_retry_seconds: float = _setting(
        1.0, "After a Redis failure, requests skip the cache this long before trying it again, so a blackholed "
             "Redis costs one time-out per interval, not one per request.", minimum=0.01)

    # -- LLM -------------------------------------------------------------------
    ollama_url: str = _setting(
        "http://127.0.0.1:11434",
        "Ollama server (or the embedded `qastream llm-server`); several, comma-separated, share the load: each call "
        "goes to the least busy server whose circuit breaker is closed, a retry to another server when one is "
        "healthy.")
    ollama_model: str = _setting("smollm2", "Model name passed to Ollama (`llama3.2` on a real server).")
    escalation_model: str = _setting(
        "", "Model that writes the regenerations of an answer scored below the threshold (attempt 2 and later), "
            "e.g. a larger, slower, better one; empty: QASTREAM_OLLAMA_MODEL writes every attempt.")
    llm_timeout_seconds: float = _setting(120.0, "Client time-out of one LLM call.", minimum=0.1)
    llm_concurrency: int = _setting(16, "LLM calls in flight per worker and per LLM server.", minimum=1)
    llm_max_tokens: int = _setting(160, "Most tokens generated per answer (Ollama `num_predict`).", minimum=1)
    llm_temperature: float = _setting(0.3, "Sampling temperature.", minimum=0.0)

    # -- scorer ------------------------------------------------------------------
    scorer_enabled: bool = _setting(True, "Score answers with BERTScore; off stores every answer unscored.")
    scorer_model: str = _setting("", "Hugging Face model folder or name; empty means the packaged all-MiniLM-L6-v2.")
    scorer_layer: int = _setting(6, "Transformer layer whose embeddings BERTScore compares.", minimum=1)
    scorer_threshold: float = _setting(
        0.33, "BERTScore F1 an answer needs to pass; calibrated for the default model (docs/quality.md).",
        minimum=-1.0, maximum=1.0)
    scorer_batch_size: int = _setting(32, "Most answers scored in one batch.", minimum=1)
    scorer_threads: int = _setting(2, "Torch threads used by the scorer.", minimum=1)
    max_attempts: int = _setting(3, "Most LLM generations per question before the best is kept as low quality.",
                                 minimum=1)

    # -- retries -------------------------------------------------------------------
    retry_overload_delays: str = _setting("2,4,8", "Seconds to wait before each overload retry, comma separated.")
    retry_quota_delay_seconds: float = _setting(30.0, "Wait before a quota retry when the server sends no "
                                                      "Retry-After.", minimum=0.0)
    retry_quota_max: int = _setting(5, "Quota retries before a question is dead-lettered.", minimum=0)
    retry_release_interval: float = _setting(0.2, "How often parked retries that are due are released.",
                                             minimum=0.01)
    breaker_threshold: int = _setting(5, "Consecutive transient LLM failures that open the circuit breaker.",
                                      minimum=1)
    breaker_cooldown_seconds: float = _setting(1.0, "First cool-down of an open breaker; doubles per failed probe.",
                                               minimum=0.01)
    breaker_max_cooldown_seconds: float = _setting(30.0, "Longest cool-down between probes.", minimum=0.01)
    reconcile_after_seconds: float = _setting(
        30.0, "A pending question with no status this long after acceptance is re-enqueued.", minimum=1.0)
    reconcile_interval_seconds: float = _setting(30.0, "How often a worker reconciles its pending questions.",
                                                 minimum=1.0)
    deadline_margin_seconds: float = _setting(
        30.0, "Slack added to every stage deadline (broker hand-off, batching, a rebalance); a question whose status "
              "has not moved past its stage's deadline is re-enqueued in a new epoch.", minimum=0.0)
    deadline_queued_seconds: float = _setting(
        0.0, "Longest wait in questions-pending for a generation slot before a question counts as lost; 0 derives "
             "it (LLM time-out + margin). Set it above the longest backlog you expect.", minimum=0.0)
    status_retention_seconds: float = _setting(
        3600.0, "How long a finished (completed or failed) question stays in the status and attempts tables; then "
                "it leaves them (a changelog tombstone) and `GET /status` answers from the database, so worker "
                "memory is bounded by what is in flight, not by history. Keep it well above any redelivery delay "
                "(a restart's replay): a stage that gets a message again after its question left the table cannot "
                "tell it is stale. 0 keeps every question.", minimum=0.0)
    check_topics_interval_seconds: float = _setting(
        10.0, "How often a worker checks that its topics exist with their configured partition counts and "
              "re-creates them if the broker lost them (0 turns the check off).", minimum=0.0)

    # -- web -----------------------------------------------------------------------
    web_host: str = _setting("127.0.0.1", "Address the HTTP API binds to and advertises to other workers.")
    web_port: int = _setting(6066, "Port of the HTTP API.", minimum=1, maximum=65535)
    max_body_bytes: int = _setting(65536, "Largest accepted request body; larger gets 413.", minimum=1)
    max_question_chars: int = _setting(4000, "Longest accepted question or reference answer.", minimum=1)
    batch_max_questions: int = _setting(
        20000, "Most questions (lines) one POST /batches may carry; more gets 413.", minimum=1)
    batch_max_bytes: int = _setting(
        16 * 1024 * 1024, "Largest POST /batches body (JSON or NDJSON); larger gets 413.", minimum=1)
    batch_check_interval_seconds: float = _setting(
        2.0, "How often the leader worker looks for batches whose every question is terminal, ends them and "
             "calls the end-of-batch hook: a batch shows completed at most this long after its last answer.",
        minimum=0.1)
    batch_cancel_grace_seconds: float = _setting(
        130.0, "A cancelled batch stays `cancelling` this long after the cancel, so the LLM calls that were in "
               "flight (at most QASTREAM_LLM_TIMEOUT_SECONDS) are stored and counted before it ends `cancelled` "
               "and its hook runs; an answer stored later still shows in its results.", minimum=0.0)
    idle_timeout_seconds: float = _setting(
        75.0, "An HTTP connection with no request in flight (kept alive, or opened and never used) is closed "
              "after this long, so idle clients cannot hoard connections (aiohttp's default is an hour).",
        minimum=0.1)
    body_timeout_seconds: float = _setting(
        10.0, "Longest wait for a request body to arrive; a client that sends it slower gets 408 and frees its "
              "slot.", minimum=0.1)
    enqueue_timeout_seconds: float = _setting(
        5.0, "Longest POST /query waits to produce an accepted question; past it the answer is 503 with "
             "Retry-After and reconciliation enqueues the stored question later (a stalled broker).",
        minimum=0.1)
    forward_timeout_seconds: float = _setting(
        5.0, "Longest GET /status waits for the worker that owns the question (a table_route forward); past it "
             "503 with Retry-After (Faust's HTTP client waits 5 min by default).", minimum=0.1)
    max_requests_in_flight: int = _setting(
        64, "Requests doing work (/query, /status) at once per worker; beyond it an immediate 503 with "
            "Retry-After instead of an unbounded queue. Above normal concurrency (~20 in flight at 900 "
            "questions/s, 32 at bench/acceptance.py's saturation) and a wait of ~70 ms at full speed.", minimum=1)
    retry_after_seconds: int = _setting(1, "Retry-After of every 503 the API answers.", minimum=1)
    live_max_streams: int = _setting(
        256, "Live status streams (GET /status/{id}/events, served or relayed to the worker owning the question) "
             "one worker holds open at once; past it an immediate 503 with Retry-After.", minimum=1)
    live_ping_seconds: float = _setting(
        15.0, "Interval of the keep-alive comment (`: ping`) on a live status stream with no news, so proxies "
              "that close silent connections leave it open; also how soon a stream notices its client left or "
              "its question moved to another worker.", minimum=0.1)
    live_max_seconds: float = _setting(
        300.0, "Longest one live status stream stays open; then it closes and the client reconnects (with "
               "Last-Event-ID, so nothing is sent twice): no connection is held without bound.", minimum=1.0)
    health_interval_seconds: float = _setting(
        1.0, "How often a worker probes the broker, the database and Redis for GET /health.", minimum=0.1)
    health_timeout_seconds: float = _setting(
        1.0, "Longest one health probe waits; a dependency that does not answer within it is reported down.",
        minimum=0.05)
    lag_interval_seconds: float = _setting(
        5.0, "How often a worker asks the broker for the log end offsets behind GET /metrics' consumer_lag; "
             "a request returns the last figures and their age instead of waiting for the broker.", minimum=0.5)

    # -- access control --------------------------------------------------------------
    auth: str = _setting(
        "off", "`required`: every route but /health, /, /dashboard, /static/* and /openapi.json needs "
               "`Authorization: Bearer <key>` (`qastream keys create`); `off`: no keys, as before.",
        choices=("off", "required"))
    auth_allow_anonymous: bool = _setting(
        False, "Let a worker with QASTREAM_AUTH=off listen on an address other machines can reach "
               "(QASTREAM_WEB_HOST not loopback); without it such a worker refuses to start.")
    auth_cache_seconds: float = _setting(
        0.5, "How long a worker reuses a key lookup before asking the database again; a revoked key is refused "
             "by every worker within this long (so at most 0.9).", minimum=0.0, maximum=0.9)
    in_flight_retry_after_seconds: int = _setting(
        2, "Retry-After of the 429 a key gets while it has its max_in_flight questions unanswered.", minimum=1)

    # -- webhooks --------------------------------------------------------------------
    webhook_secret: str = _setting(
        "", "Key of the HMAC-SHA256 `X-Qastream-Signature` of every webhook body. Empty turns webhooks off: a "
            "request with a `webhook_url` is refused with 400. Keep it out of the repository.")
    webhook_allowed_hosts: str = _setting(
        "", "Comma-separated hosts (names or addresses) a webhook may target although they are loopback, "
            "private or link-local (a receiver on your own network); every other target must be public.")
    webhook_max_attempts: int = _setting(8, "Most POSTs of one webhook delivery before it is recorded failed.",
                                         minimum=1)
    webhook_timeout_seconds: float = _setting(
        10.0, "Longest one webhook POST may take (connect, send, answer); a receiver that hangs costs one "
              "failed attempt, never a held stage.", minimum=0.1)
    webhook_backoff_base_seconds: float = _setting(
        5.0, "Wait after a delivery's first failed attempt; doubles after each further one.", minimum=0.0)
    webhook_backoff_max_seconds: float = _setting(600.0, "Longest wait between two attempts of a delivery.",
                                                  minimum=0.0)
    webhook_concurrency: int = _setting(32, "Webhook POSTs in flight at once per worker.", minimum=1)
    webhook_host_concurrency: int = _setting(
        4, "Webhook POSTs in flight at once per worker to one host, so a slow receiver cannot take every slot; "
           "a delivery that finds no slot waits one time-out and tries again, without using an attempt.",
        minimum=1)
    topic_webhooks: str = _setting("webhook-deliveries", "Webhook deliveries: attempts, waits and releases.")
    partitions_webhooks: int = _setting(2, "Partitions of the webhook deliveries topic and of its parking table.",
                                        minimum=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read every field from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = env_name(f.name)
            if name in env:
                values[f.name] = _parse(f, name, env[name])
        known = {env_name(f.name) for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in known)
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(unknown)} (see config/defaults.env)")
        settings = cls(**values)
        settings.overload_delays()  # validate the lists early
        settings.llm_urls()
        if settings.partitions_events != settings.partitions_pending:
            # The generate stage reads its keys' status locally: both must hash alike.
            raise SettingsError(f"{env_name('partitions_events')} ({settings.partitions_events}) must equal "
                                f"{env_name('partitions_pending')} ({settings.partitions_pending})")
        if settings.partitions_bulk != settings.partitions_pending:
            raise SettingsError(f"{env_name('partitions_bulk')} ({settings.partitions_bulk}) must equal "
                                f"{env_name('partitions_pending')} ({settings.partitions_pending})")
        return settings

    def overload_delays(self) -> tuple[float, ...]:
        """The overload back-off schedule as numbers."""
        try:
            delays = tuple(float(part) for part in self.retry_overload_delays.split(",") if part.strip())
        except ValueError:
            raise SettingsError(f"{env_name('retry_overload_delays')}: expected comma-separated seconds, "
                                f"got {self.retry_overload_delays!r}") from None
        if any(not math.isfinite(d) or d < 0 for d in delays):
            raise SettingsError(f"{env_name('retry_overload_delays')}: delays must be finite and not negative")
        return delays

    def llm_urls(self) -> tuple[str, ...]:
        """``QASTREAM_OLLAMA_URL`` as its list of server URLs, each ``http(s)://host[:port]``, none twice."""
        urls = tuple(part.strip().rstrip("/") for part in self.ollama_url.split(","))
        name = env_name("ollama_url")
        if not urls or any(not url for url in urls):
            raise SettingsError(f"{name}: expected comma-separated http(s) URLs, got {self.ollama_url!r}")
        for url in urls:
            try:
                parts = urlsplit(url)
                _ = parts.port  # raises for a port that is not a number or out of range
            except ValueError as exc:
                raise SettingsError(f"{name}: {url!r} is not a URL ({exc})") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SettingsError(f"{name}: {url!r} is not an http(s) URL with a host")
        if len(set(urls)) != len(urls):
            raise SettingsError(f"{name}: a server is listed twice in {self.ollama_url!r}")
        return urls

    def llm_slots(self) -> int:
        """LLM calls a worker may have in flight: ``QASTREAM_LLM_CONCURRENCY`` on each server."""
        return self.llm_concurrency * len(self.llm_urls())

    def webhook_backoff(self) -> Backoff:
        """The attempts and waits of a webhook delivery."""
        return Backoff(self.webhook_max_attempts, self.webhook_backoff_base_seconds, self.webhook_backoff_max_seconds)

    def webhook_hosts(self) -> frozenset[str]:
        """``QASTREAM_WEBHOOK_ALLOWED_HOSTS`` as normalised host names."""
        return parse_allowed_hosts(self.webhook_allowed_hosts)

    def topic_name(self, name: str) -> str:
        """Full name of a topic after the prefix."""
        return f"{self.topic_prefix}{name}"

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{os.path.abspath(os.path.join(self.data_dir, 'qastream.db'))}"


def env_name(field_name: str) -> str:
    """Environment variable that sets ``field_name``."""
    return PREFIX + field_name.upper()


def _parse(f: dataclasses.Field, name: str, raw: str) -> Any:
    text = raw.strip()
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "bool":
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        value: Any = {"int": int, "float": float, "str": str}[kind](text)
    except ValueError:
        expected = {"bool": "true or false", "int": "an integer", "float": "a number"}.get(kind, kind)
        raise SettingsError(f"{name}: expected {expected}, got {raw!r}") from None
    if kind == "float" and not math.isfinite(value):
        raise SettingsError(f"{name}: expected a finite number, got {raw!r}")
    meta = f.metadata
    if meta["choices"] and value not in meta["choices"]:
        raise SettingsError(f"{name}: expected one of {', '.join(meta['choices'])}, got {raw!r}")
    if meta["min"] is not None and value < meta["min"]:
        raise SettingsError(f"{name}: must be at least {meta['min']}, got {raw!r}")
    if meta["max"] is not None and value > meta["max"]:
        raise SettingsError(f"{name}: must be at most {meta['max']}, got {raw!r}")
    return value


def render_env_file() -> str:
    """``config/defaults.env``: every setting, its doc and its default."""
    lines = ["# qastream settings and their defaults, generated by `qastream settings`.",
             "# Every variable is optional; set it in the environment to override the default.", ""]
    for f in dataclasses.fields(Settings):
        default = f.default
        if isinstance(default, bool):
            default = str(default).lower()
        lines.append(f"# {f.metadata['doc']}")
        lines.append(f"{env_name(f.name)}={default}")
        lines.append("")
    return "\n".join(lines)


def render_markdown_table() -> str:
    """The README's settings table."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        default = f.default
        if isinstance(default, bool):
            default = str(default).lower()
        shown = f"`{default}`" if default != "" else "(empty)"
        rows.append(f"| `{env_name(f.name)}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows)
