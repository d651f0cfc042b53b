"""The one YAML configuration file, validated at start-up.

Every knob is documented in the README's configuration reference. Unknown
keys are errors (a typo must not silently fall back to a default), and every
error names the field it is about.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from observatory.detectors.config import KINDS, DetectorsConfig
from observatory.sinks.alerts import AlertsConfig

ENV_BOOTSTRAP = "OBSERVATORY_KAFKA_BOOTSTRAP"
ENV_DATABASE_URL = "OBSERVATORY_DATABASE_URL"


class ConfigError(Exception):
    """A configuration problem, phrased for a human, naming the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicsConfig(_Section):
    spans: str = "otlp_spans"
    #: The Collector's metrics topic (e.g. ``otlp_metrics``), for applications that send
    #: GenAI metrics *instead of* spans; null (default) does not read metrics, because
    #: an application sending both would be counted twice.
    metrics: str | None = None
    dead_letter: str = "observatory.dlq"


class KafkaConfig(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: TopicsConfig = TopicsConfig()
    #: Encoding of each topic: otlp_proto, otlp_json, or auto (sniffed per record).
    #: A record header (``content-type`` / ``otlp.encoding``) always wins.
    encodings: dict[str, Literal["otlp_proto", "otlp_json", "auto"]] = Field(default_factory=dict)
    #: Extra librdkafka settings passed to every client (security.protocol, sasl.*, ssl.*).
    client: dict[str, str | int | bool] = Field(default_factory=dict)
    #: Records taken from a partition per poll.
    batch_size: int = Field(default=2000, ge=1, le=100_000)
    #: Seconds to wait for the broker at start-up before giving up.
    connect_timeout_seconds: float = Field(default=10.0, gt=0)

    def encoding_of(self, topic: str) -> str:
        return self.encodings.get(topic, "auto")


class DatabaseConfig(_Section):
    url: str = "postgresql://observatory:observatory@127.0.0.1:5433/observatory"
    #: Rows written per statement batch.
    batch_rows: int = Field(default=5000, ge=1, le=1_000_000)
    #: Give up after this many seconds of failed retries (0: retry forever).
    max_retry_seconds: float = Field(default=0, ge=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not re.match(r"^postgres(ql)?://", value):
            raise ValueError("must be a postgresql:// URL")
        return value


class PipelineConfig(_Section):
    window_seconds: int = Field(default=60, ge=1, le=3600)
    #: How far behind the slowest busy partition's newest event the watermark trails.
    watermark_delay_seconds: float = Field(default=10.0, ge=0)
    #: How long after a window is emitted late data still corrects it.
    allowed_lateness_seconds: float = Field(default=300.0, ge=0)
    #: A caught-up partition with no data for this long stops holding the watermark back.
    idle_partition_seconds: float = Field(default=5.0, gt=0)
    #: Key shards of the stateful steps; fixed for the life of a recovery store.
    shards: int = Field(default=16, ge=1, le=1024)
    #: Bytewax recovery directory; null disables recovery.
    recovery_dir: str | None = ".observatory/recovery"
    #: Recovery partitions = the most workers you will ever run in total.
    recovery_partitions: int = Field(default=8, ge=1, le=1024)
    snapshot_interval_seconds: float = Field(default=30.0, gt=0)
    #: A session ends this long (event time) after its last span.
    session_timeout_seconds: float = Field(default=900.0, gt=0)
    #: A live session's row is rewritten at most this often (event time); its end always is.
    session_update_seconds: float = Field(default=300.0, ge=0)
    #: Live sessions kept per shard; past it the least recently seen is ended early.
    max_sessions_per_shard: int = Field(default=200_000, ge=1)
    #: Drop chunks older than this many days (null keeps everything).
    retention_days: int | None = Field(default=None, ge=1)
    #: The detectors look at a window this many times: as each 1/N of it is
    #: complete (event time), then when it closes. An anomaly already clear in
    #: part of a window alerts then, without waiting for the window's end. The
    #: early looks only score; detectors learn from closed windows. 1 = only
    #: closed windows. Must divide window_seconds into whole milliseconds.
    checks_per_window: int = Field(default=4, ge=1, le=60)

    @field_validator("window_seconds")
    @classmethod
    def _window_divides_hour(cls, value: int) -> int:
        if 3600 % value:
            raise ValueError("must divide 3600, so that windows roll up into hours")
        return value

    @model_validator(mode="after")
    def _checks_divide_window(self) -> PipelineConfig:
        if (self.window_seconds * 1000) % self.checks_per_window:
            raise ValueError(
                f"checks_per_window ({self.checks_per_window}) must divide window_seconds "
                f"({self.window_seconds}) into whole milliseconds"
            )
        return self


class IngestConfig(_Section):
    #: Decode protobuf records with the native (Rust) decoder when it is built;
    #: results are identical to the Python decoder's, several times faster.
    native_decoder: bool = True
    #: Resource, then span, attributes that name the tenant; the first present wins.
    tenant_attributes: list[str] = Field(default_factory=lambda: ["tenant.id"], min_length=1)
    max_tokens: int = Field(default=50_000_000, ge=1)
    max_cost_usd: float = Field(default=100_000.0, gt=0)
    max_attribute_bytes: int = Field(default=16_384, ge=64)
    #: Longest dimension value (tenant, service, provider, model, agent, tool, session
    #: id, …) kept, in UTF-8 bytes; longer ones are dead-lettered. At most 512: five
    #: free-text columns of llm_stats' unique key must fit a 2704-byte btree entry.
    max_dimension_bytes: int = Field(default=256, ge=64, le=512)
    max_record_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: Reject spans that ended more than this long ago (0 disables).
    max_past_skew_seconds: float = Field(default=0, ge=0)
    #: Reject spans that end more than this far in the future (0 disables).
    max_future_skew_seconds: float = Field(default=86_400, ge=0)


class PriceOverride(_Section):
    model: str
    provider: str = ""
    valid_from: str = "1970-01-01"
    input: float = Field(ge=0)
    output: float = Field(default=0.0, ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    reasoning: float | None = Field(default=None, ge=0)
    aliases: list[str] = Field(default_factory=list)

    @field_validator("valid_from")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        from datetime import date

        date.fromisoformat(value)
        return value


class PricingConfig(_Section):
    models: list[PriceOverride] = Field(default_factory=list)


class Config(_Section):
    kafka: KafkaConfig = KafkaConfig()
    database: DatabaseConfig = DatabaseConfig()
    pipeline: PipelineConfig = PipelineConfig()
    ingest: IngestConfig = IngestConfig()
    pricing: PricingConfig = PricingConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    alerts: AlertsConfig = AlertsConfig()

    @model_validator(mode="after")
    def _routes_exist(self) -> Config:
        known = set(self.alerts.routes)
        for kind in KINDS:
            for route in self.detectors.kind(kind).routes:
                if route not in known:
                    raise ValueError(
                        f"detectors.{kind}.routes: no route named {route!r} in alerts.routes"
                    )
        return self


def _format_error(error: dict[str, Any]) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{field}: {message}"


def _apply_env(raw: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    if env.get(ENV_BOOTSTRAP):
        raw.setdefault("kafka", {})
        if isinstance(raw["kafka"], dict):
            raw["kafka"]["bootstrap_servers"] = env[ENV_BOOTSTRAP]
    if env.get(ENV_DATABASE_URL):
        raw.setdefault("database", {})
        if isinstance(raw["database"], dict):
            raw["database"]["url"] = env[ENV_DATABASE_URL]
    return raw


def parse_config(raw: Any, *, source: str = "config", env: dict[str, str] | None = None) -> Config:
    """Validate a parsed YAML document (environment overrides applied)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    raw = _apply_env(raw, dict(os.environ) if env is None else env)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source}: {_format_error(e)}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path | None, *, env: dict[str, str] | None = None) -> Config:
    """Load and validate a YAML file; ``None`` means defaults (plus environment)."""
    if path is None:
        return parse_config({}, source="defaults", env=env)
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(
            f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        ) from None
    return parse_config(raw, source=str(path), env=env)


def redact_url(url: str) -> str:
    """Hide the password of a connection URL for printing.

    >>> redact_url("postgresql://u:secret@h:5433/db")
    'postgresql://u:***@h:5433/db'
    """
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def effective_config_yaml(config: Config) -> str:
    data = config.model_dump(mode="json")
    data["database"]["url"] = redact_url(data["database"]["url"])
    for key in list(data["kafka"]["client"]):
        if any(word in key for word in ("password", "secret", "token", "key")):
            data["kafka"]["client"][key] = "***"
    return yaml.safe_dump(data, sort_keys=False)
