"""Alert delivery: configuration, channels, a durable outbox and its dispatcher.

Flow of a notification::

    AlertLifecycle ──Alert──▶ AlertOutbox.enqueue (in the flow, idempotent)
                                 │  alert_outbox row per (incident, sequence, route): pending
                                 ▼
    AlertDispatcher.run_once (background thread or process, any number of them)
        claim one due row  FOR UPDATE SKIP LOCKED  (the lock is held while sending)
        → Slack / PagerDuty / webhook, one HTTP attempt
        → alert_deliveries row for the attempt; outbox row delivered / failed /
          suppressed, or pending again with next_attempt_at (backoff, Retry-After)

Guarantees:

* A replayed enqueue inserts nothing (primary key), so a flow replay after a
  crash re-sends nothing already queued.
* A row's status and its attempt record commit together with the claim, so a
  dispatcher that dies before or while sending leaves the row pending (the
  lock goes with its connection) and another dispatcher sends it. A delivered
  row is never claimed again. The one remaining window — the receiver got the
  request but the commit failed — can repeat a notification; PagerDuty and
  Alertmanager de-duplicate it by ``dedup_key`` / fingerprint.
* Per dedup key and route, notifications go out in incident and sequence order
  (a row waits while an earlier one is pending).
* A route's ``max_per_hour`` cap and ``max_age_seconds`` suppress / fail firing
  notifications (recorded). A resolve is sent only if a firing notification of
  its incident was delivered on that route (else suppressed), and then it is
  exempt from the cap and the age limit, so no incident is left open at the
  receiver; ``send_resolved: false`` suppresses resolves.
* Secrets (webhook URLs, routing keys) are read at start-up from the
  environment or a secrets file, added to requests at send time only, and
  scrubbed from every error text, log line and exception message; the
  database never sees them.

Status codes: 2xx delivered; 408, 429 and 5xx are retried (honouring
``Retry-After``, in seconds or as an HTTP date); other 4xx (Slack's
``invalid_payload``, ``channel_not_found``...; PagerDuty's 400) and
redirects fail at once. Transport errors and timeouts are retried.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import httpx
import psycopg
import yaml
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from observatory.operators.alerting import LifecyclePolicy
from observatory.schemas.alerts import (
    Alert,
    RouteRule,
    Severity,
    alert_as_dict,
    alertmanager_payload,
    pagerduty_payload,
    slack_payload,
)
from observatory.sinks.base import Backoff, retry

log = logging.getLogger("observatory.sinks.alerts")

__all__ = [
    "AlertConfigError",
    "AlertDispatcher",
    "AlertOutbox",
    "AlertOutboxSink",
    "AlertOutboxWriter",
    "AlertsConfig",
    "Channel",
    "DispatchStats",
    "PagerDutyChannel",
    "RouteConfig",
    "Secret",
    "SendResult",
    "SlackChannel",
    "WebhookChannel",
    "build_channels",
    "parse_retry_after",
    "render_payload",
]

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
USER_AGENT = "observatory-alerts/0.1"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ROUTE_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")
#: Retry-After values above this are treated as this (the row then usually expires).
MAX_RETRY_AFTER_S = 24 * 3600.0


class AlertConfigError(Exception):
    """A problem with the ``alerts`` section, in one line, naming the field (never a secret)."""


# --- secrets ---------------------------------------------------------------------------------


class Secret:
    """A string that does not show itself in ``repr``, ``str``, logs or tracebacks.

    >>> s = Secret("https://hooks.slack.com/services/T0/B0/xyz")
    >>> s, str(s), s.reveal()[-3:]
    (Secret('***'), '***', 'xyz')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


_URL_IN_TEXT = re.compile(r"\b(https?://)(?:[^@/\s'\"<>]*@)?([^/\s'\"<>?#]+)[^\s'\"<>]*")


def _secret_variants(secret: str) -> set[str]:
    """The secret and the parts of it that would still give it away."""
    variants = {secret, quote(secret, safe=""), quote(secret, safe="/:")}
    if re.match(r"^https?://", secret):
        parts = urlsplit(secret)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        if len(tail) > 1:
            variants.add(tail)
        variants.update(p for p in re.split(r"[/?&=]", tail) if len(p) >= 16)
        if parts.password:
            variants.add(parts.password)
    return {v for v in variants if v}


class Scrubber:
    """Replaces known secrets (and the parts that give them away), then — unless
    ``redact_urls`` is off — the path and credentials of any URL, with ``***``.

    >>> scrub = Scrubber(["https://hooks.example/services/T0/B0/s3cr3tT0ken0123456"])
    >>> scrub("POST https://hooks.example/services/T0/B0/s3cr3tT0ken0123456 failed; "
    ...       "token s3cr3tT0ken0123456")
    'POST *** failed; token ***'
    >>> scrub("see https://user:pw@other.example/a/b?c=d")
    'see https://other.example/***'
    """

    def __init__(self, secrets: Iterable[str] = (), *, redact_urls: bool = True):
        variants: set[str] = set()
        for secret in secrets:
            if secret:
                variants |= _secret_variants(secret)
        self._variants = sorted(variants, key=len, reverse=True)
        self._redact_urls = redact_urls

    def __call__(self, text: str) -> str:
        for variant in self._variants:
            text = text.replace(variant, "***")
        return _URL_IN_TEXT.sub(r"\1\2/***", text) if self._redact_urls else text


class _SecretLogFilter(logging.Filter):
    """httpx logs every request's full URL at INFO: scrub our secrets from its records."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._scrub = Scrubber(redact_urls=False)

    def add(self, secret: str) -> None:
        if secret not in self._secrets:
            self._secrets.add(secret)
            self._scrub = Scrubber(self._secrets, redact_urls=False)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken record: let logging report it as usual
            return True
        scrubbed = self._scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        return True


_LOG_FILTER = _SecretLogFilter()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_LOG_FILTER)


# --- configuration ---------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        # Do not echo the value: it may be the secret pasted in the wrong place.
        raise ValueError(
            "must be the name of an environment variable (letters, digits, _), "
            "not the secret itself"
        )
    return value


class RouteConfig(_Section):
    """One notification route (``alerts.routes.<name>``).

    The secret — a Slack or webhook URL, a PagerDuty routing key — is never in
    the YAML: give the name of an environment variable holding it
    (``url_env`` / ``routing_key_env``), or a YAML/JSON file of secrets and
    the key to read (``secrets_file`` + ``secret_key``).
    """

    type: Literal["slack", "pagerduty", "webhook"]
    secrets_file: str | None = None
    secret_key: str | None = Field(default=None, validate_default=True)
    #: slack, webhook: environment variable holding the URL.
    url_env: str | None = Field(default=None, validate_default=True)
    #: pagerduty: environment variable holding the routing (integration) key.
    routing_key_env: str | None = Field(default=None, validate_default=True)
    #: pagerduty only: the Events API v2 URL (not a secret).
    url: str | None = Field(default=None, validate_default=True)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    #: Attempts per notification before it is marked failed.
    max_attempts: int = Field(default=8, ge=1, le=100)
    #: A notification not delivered this long after it was queued is given up.
    max_age_seconds: float = Field(default=3600.0, gt=0)
    #: Notifications delivered per rolling hour; past it they are suppressed (0: no cap).
    max_per_hour: int = Field(default=60, ge=0)
    send_resolved: bool = True
    #: Which alerts the route gets: at least this severity...
    min_severity: Severity = "info"
    #: ...of these kinds and tenants (empty: all).
    kinds: list[str] = Field(default_factory=list)
    tenants: list[str] = Field(default_factory=list)

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        has_file = bool(info.data.get("secrets_file"))
        if has_file and not value:
            raise ValueError("required with secrets_file: the key of the secret in that file")
        if value and not has_file:
            raise ValueError("only used with secrets_file")
        return value

    @field_validator("url_env", "routing_key_env")
    @classmethod
    def _secret_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        wanted = "routing_key_env" if kind == "pagerduty" else "url_env"
        if value is not None:
            _env_name(value)
            if kind is not None and info.field_name != wanted:
                raise ValueError(f"not used by a {kind} route: give {wanted}")
            if info.data.get("secrets_file"):
                raise ValueError(f"give {wanted} or secrets_file, not both")
        elif kind is not None and info.field_name == wanted and not info.data.get("secrets_file"):
            raise ValueError(f"required for a {kind} route (or give secrets_file and secret_key)")
        return value

    @field_validator("url")
    @classmethod
    def _events_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if kind is not None and kind != "pagerduty":
            if value is not None:
                raise ValueError(
                    f"only for pagerduty routes; a {kind} URL is a secret: "
                    "give it with url_env or secrets_file"
                )
            return None
        if value is None:
            return PAGERDUTY_EVENTS_URL if kind == "pagerduty" else None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL")
        return value


class AlertsConfig(_Section):
    """The ``alerts:`` section: routes, the lifecycle knobs, and the dispatcher's pace."""

    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    #: Turns exemplar trace ids into links, e.g. ``https://jaeger.example/trace/{trace_id}``.
    trace_url_template: str | None = None
    #: Open when this many of the last ``open_window`` windows are anomalous.
    open_after_windows: int = Field(default=1, ge=1, le=64)
    open_window: int = Field(default=1, ge=1, le=64, validate_default=True)
    #: While firing, notify again after this long in event time (0: never).
    renotify_interval_seconds: float = Field(default=4 * 3600.0, ge=0)
    #: Resolve after this many consecutive normal windows.
    resolve_after_windows: int = Field(default=3, ge=1, le=10_000)
    #: A key that resolved less than this long ago is "flapping" (0: no flap rule)...
    flap_window_seconds: float = Field(default=3600.0, ge=0)
    #: ...and re-opens only after this many consecutive anomalous windows...
    flap_open_windows: int = Field(default=3, ge=1, le=10_000)
    #: ...then resolves only after this many consecutive normal windows.
    flap_resolve_windows: int = Field(default=6, ge=1, le=10_000)
    #: A key without verdicts this long (event time) is forgotten; if firing, resolved.
    idle_timeout_seconds: float = Field(default=3600.0, gt=0)
    #: Keys remembered per lifecycle instance (firing ones are never evicted).
    max_keys: int = Field(default=100_000, ge=1)
    #: Dispatcher: how often it looks for due notifications.
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    #: Dispatcher: retry delay ceilings double from this up to ``retry_max_seconds``
    #: (full jitter: the delay is uniform in [0, ceiling]).
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)

    @field_validator("routes")
    @classmethod
    def _route_names(cls, value: dict[str, RouteConfig]) -> dict[str, RouteConfig]:
        for name in value:
            if not _ROUTE_NAME.match(name):
                raise ValueError(
                    f"route name {name!r} must be 1-63 lowercase letters, digits, _ or -"
                )
        return value

    @field_validator("trace_url_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://", value):
            raise ValueError("must be an http(s) URL")
        if "{trace_id}" not in value:
            raise ValueError("must contain {trace_id}")
        if re.search(r"\{(?!trace_id\})[^}]*\}", value):
            raise ValueError("the only placeholder allowed is {trace_id}")
        return value

    @field_validator("open_window")
    @classmethod
    def _window(cls, value: int, info: ValidationInfo) -> int:
        m = info.data.get("open_after_windows")
        if m is not None and value < m:
            raise ValueError(f"must be at least open_after_windows ({m})")
        return value

    def route_rules(self) -> tuple[RouteRule, ...]:
        return tuple(
            RouteRule(name, frozenset(r.kinds), frozenset(r.tenants), r.min_severity)
            for name, r in self.routes.items()
        )

    def lifecycle_policy(self) -> LifecyclePolicy:
        return LifecyclePolicy(
            open_after_windows=self.open_after_windows,
            open_window=self.open_window,
            renotify_interval_s=self.renotify_interval_seconds,
            resolve_after_windows=self.resolve_after_windows,
            flap_window_s=self.flap_window_seconds,
            flap_open_windows=self.flap_open_windows,
            flap_resolve_windows=self.flap_resolve_windows,
            idle_timeout_s=self.idle_timeout_seconds,
            max_keys=self.max_keys,
            route_rules=self.route_rules(),
        )


def _read_secrets_file(path: str, where: str) -> Mapping[str, Any]:
    try:
        text = Path(path).expanduser().read_text()
    except OSError as exc:
        raise AlertConfigError(
            f"{where}.secrets_file: cannot read {path}: {exc.strerror}"
        ) from None
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError:
        # No excerpt: the offending line could be a secret.
        raise AlertConfigError(f"{where}.secrets_file: {path} is not valid YAML or JSON") from None
    if not isinstance(data, dict):
        raise AlertConfigError(f"{where}.secrets_file: {path} must be a mapping of keys to secrets")
    return data


def resolve_secret(name: str, route: RouteConfig, env: Mapping[str, str] | None = None) -> Secret:
    """The route's secret, from the environment or its secrets file.

    Raises :class:`AlertConfigError` naming the route and the variable (or
    file and key) when it is missing — never the value.
    """
    env = os.environ if env is None else env
    where = f"alerts.routes.{name}"
    if route.secrets_file:
        data = _read_secrets_file(route.secrets_file, where)
        value = data.get(route.secret_key)
        if not isinstance(value, str) or not value.strip():
            raise AlertConfigError(
                f"{where}.secret_key: no secret {route.secret_key!r} in {route.secrets_file}"
            )
        source = f"{where}.secret_key: the secret {route.secret_key!r}"
    else:
        field = "routing_key_env" if route.type == "pagerduty" else "url_env"
        var = getattr(route, field)
        value = env.get(var, "")
        if not value.strip():
            raise AlertConfigError(f"{where}.{field}: environment variable {var} is not set")
        source = f"{where}.{field}: the value of {var}"
    value = value.strip()
    if route.type == "pagerduty":
        if re.search(r"\s", value):
            raise AlertConfigError(f"{source} is not a routing key (it contains whitespace)")
    elif not re.match(r"^https?://[^/\s]+", value) or re.search(r"\s", value):
        raise AlertConfigError(f"{source} is not an http(s) URL")
    return Secret(value)


# --- payloads --------------------------------------------------------------------------------


def render_payload(
    route_type: str, alert: Alert, *, route_name: str, trace_url_template: str | None = None
) -> dict[str, Any]:
    """The request body for a route type, without secrets (what the outbox stores)."""
    if route_type == "slack":
        return slack_payload(alert, trace_url_template=trace_url_template)
    if route_type == "pagerduty":
        return pagerduty_payload(alert, trace_url_template=trace_url_template)
    if route_type == "webhook":
        return alertmanager_payload(
            alert, receiver=route_name, trace_url_template=trace_url_template
        )
    raise ValueError(f"unknown route type {route_type!r}")


# --- channels --------------------------------------------------------------------------------

Outcome = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one HTTP attempt (or of :meth:`Channel.deliver`'s attempts)."""

    outcome: Outcome
    http_status: int | None = None
    #: Scrubbed, one line; None when delivered.
    error: str | None = None
    #: Seconds the receiver asked us to wait (Retry-After).
    retry_after: float | None = None
    duration_ms: float = 0.0
    attempts: int = 1

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    >>> parse_retry_after("120")
    120.0
    >>> now = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
    >>> parse_retry_after("Sun, 01 Mar 2026 10:00:30 GMT", now=now)
    30.0
    >>> parse_retry_after("Sun, 01 Mar 2026 09:00:00 GMT", now=now), parse_retry_after("soon")
    (0.0, None)
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER_S)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Channel:
    """One route's sender. One :meth:`send` is one HTTP attempt; it never raises
    for HTTP or transport problems, and its error texts are scrubbed of the secret."""

    type: ClassVar[str] = ""

    def __init__(
        self,
        name: str,
        route: RouteConfig,
        secret: Secret,
        *,
        trace_url_template: str | None = None,
        client: httpx.Client | None = None,
    ):
        if route.type != self.type:
            raise ValueError(f"route {name} is a {route.type} route, not {self.type}")
        self.name = name
        self.route = route
        self.trace_url_template = trace_url_template
        self._secret = secret
        self.scrub = Scrubber([secret.reveal()])
        _LOG_FILTER.add(secret.reveal())
        self._own_client = client is None
        self._client = client or httpx.Client(
            follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} route={self.name!r}>"

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    # --- what to send --------------------------------------------------------------------

    def render(self, alert: Alert) -> dict[str, Any]:
        """The body without secrets (stored in the outbox)."""
        return render_payload(
            self.type, alert, route_name=self.name, trace_url_template=self.trace_url_template
        )

    def _request(self, payload: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
        """URL and body to post, secrets added."""
        return self._secret.reveal(), payload

    # --- sending -------------------------------------------------------------------------

    def send(self, payload: Mapping[str, Any]) -> SendResult:
        """One attempt: POST the payload (secrets added here) and classify the outcome."""
        url, body = self._request(payload)
        content = json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
        timeout = self.route.timeout_seconds
        started = time.monotonic()

        def took() -> float:
            return round((time.monotonic() - started) * 1000, 1)

        try:
            response = self._client.post(
                url,
                content=content,
                headers={"Content-Type": "application/json"},
                timeout=timeout,
            )
        except httpx.TimeoutException as exc:
            error = f"{type(exc).__name__}: no response within {timeout:g}s"
            return SendResult("retry", error=error, duration_ms=took())
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            error = self.scrub(_one_line(f"{type(exc).__name__}: {exc}"))
            return SendResult("failed", error=error, duration_ms=took())
        except httpx.HTTPError as exc:  # connect, read, write, remote protocol errors
            error = self.scrub(_one_line(f"{type(exc).__name__}: {exc}"))
            return SendResult("retry", error=error, duration_ms=took())
        status = response.status_code
        if 200 <= status < 300:
            return SendResult("delivered", http_status=status, duration_ms=took())
        body_text = self.scrub(_one_line(response.text, 200))
        error = f"HTTP {status}" + (f": {body_text}" if body_text else "")
        if status in (408, 429) or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return SendResult(
                "retry",
                http_status=status,
                error=error,
                retry_after=retry_after,
                duration_ms=took(),
            )
        return SendResult("failed", http_status=status, error=error, duration_ms=took())

    def deliver(
        self,
        payload: Mapping[str, Any],
        *,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> SendResult:
        """Send now, retrying in-process (no outbox): for tests of a route and one-offs.

        Exponential backoff with full jitter, ``Retry-After`` honoured, at most
        ``max_attempts`` attempts and ``max_age_seconds`` in all.
        """
        backoff = backoff or Backoff(initial_s=1.0, max_s=60.0)
        rng = rng or random.Random()
        started = clock()
        attempt = 0
        while True:
            attempt += 1
            result = self.send(payload)
            if result.outcome != "retry":
                return _with_attempts(result, attempt)
            if attempt >= self.route.max_attempts:
                error = f"gave up after {attempt} attempts: {result.error}"
                return _with_attempts(result, attempt, outcome="failed", error=error)
            delay = _retry_delay(result, attempt, backoff, rng)
            if clock() - started + delay > self.route.max_age_seconds:
                error = (
                    f"gave up: a retry in {delay:.1f}s would pass max_age_seconds: {result.error}"
                )
                return _with_attempts(result, attempt, outcome="failed", error=error)
            sleep(delay)


def _with_attempts(result: SendResult, attempts: int, **changes: Any) -> SendResult:
    fields = {name: getattr(result, name) for name in SendResult.__slots__}
    fields.update(changes, attempts=attempts)
    return SendResult(**fields)


def _retry_delay(result: SendResult, attempt: int, backoff: Backoff, rng: random.Random) -> float:
    """Retry-After if the receiver gave one, else full jitter: uniform in [0, ceiling]."""
    if result.retry_after is not None:
        return result.retry_after
    return rng.uniform(0.0, backoff.ceiling(attempt - 1))


class SlackChannel(Channel):
    """Slack incoming webhook; the webhook URL is the secret."""

    type = "slack"


class WebhookChannel(Channel):
    """Alertmanager-compatible webhook (format version 4); the URL is the secret."""

    type = "webhook"


class PagerDutyChannel(Channel):
    """PagerDuty Events API v2; the routing key is the secret, the URL is not."""

    type = "pagerduty"

    def _request(self, payload: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
        assert self.route.url is not None
        return self.route.url, {"routing_key": self._secret.reveal(), **payload}


CHANNEL_TYPES: dict[str, type[Channel]] = {
    "slack": SlackChannel,
    "pagerduty": PagerDutyChannel,
    "webhook": WebhookChannel,
}


def build_channels(
    config: AlertsConfig,
    env: Mapping[str, str] | None = None,
    *,
    client: httpx.Client | None = None,
) -> dict[str, Channel]:
    """One channel per configured route, secrets resolved now (fails fast, in one line)."""
    return {
        name: CHANNEL_TYPES[route.type](
            name,
            route,
            resolve_secret(name, route, env),
            trace_url_template=config.trace_url_template,
            client=client,
        )
        for name, route in config.routes.items()
    }


# --- outbox ----------------------------------------------------------------------------------

_UPSERT_ANOMALY = """
INSERT INTO anomalies (detected_at, dedup_key, kind, detector, tenant, subject, severity, status,
                       sequence, window_start, window_end, metric, observed, expected, score,
                       summary, exemplar_trace_ids, session_id, details, last_event_at,
                       resolved_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (dedup_key, detected_at) DO UPDATE SET
    kind = EXCLUDED.kind, detector = EXCLUDED.detector, tenant = EXCLUDED.tenant,
    subject = EXCLUDED.subject, severity = EXCLUDED.severity, status = EXCLUDED.status,
    sequence = EXCLUDED.sequence, window_start = EXCLUDED.window_start,
    window_end = EXCLUDED.window_end, metric = EXCLUDED.metric, observed = EXCLUDED.observed,
    expected = EXCLUDED.expected, score = EXCLUDED.score, summary = EXCLUDED.summary,
    exemplar_trace_ids = EXCLUDED.exemplar_trace_ids, session_id = EXCLUDED.session_id,
    details = EXCLUDED.details, last_event_at = EXCLUDED.last_event_at,
    resolved_at = EXCLUDED.resolved_at, updated_at = now()
WHERE anomalies.sequence < EXCLUDED.sequence
"""

_INSERT_OUTBOX = """
INSERT INTO alert_outbox (dedup_key, opened_at, sequence, route, state, payload, status,
                          last_error)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (dedup_key, opened_at, sequence, route) DO NOTHING
"""


class AlertOutbox:
    """Queues alerts for delivery: idempotent, in the caller's transaction.

    Needs the routes' types and the trace URL template to render payloads,
    but no secrets.
    """

    def __init__(self, config: AlertsConfig):
        self.config = config

    def _anomaly_row(self, alert: Alert) -> tuple:
        data = alert_as_dict(alert)
        return (
            alert.opened_at,
            alert.dedup_key,
            alert.kind,
            alert.detector,
            alert.tenant,
            Jsonb(data["subject"]),
            alert.severity,
            alert.state,
            alert.sequence,
            alert.window_start,
            alert.window_end,
            alert.metric,
            alert.observed,
            alert.expected,
            alert.score,
            alert.summary,
            list(alert.exemplar_trace_ids),
            alert.session_id,
            Jsonb(data["details"]),
            alert.detected_at,
            None if alert.firing else alert.detected_at,
        )

    def _outbox_rows(self, alert: Alert) -> Iterable[tuple]:
        for name in dict.fromkeys(alert.routes):
            route = self.config.routes.get(name)
            if route is None:
                log.warning(
                    "alert %s #%d: route %r is not configured",
                    alert.dedup_key,
                    alert.sequence,
                    name,
                )
                payload, status, error = alert_as_dict(alert), "failed", "route is not configured"
            else:
                payload = render_payload(
                    route.type,
                    alert,
                    route_name=name,
                    trace_url_template=self.config.trace_url_template,
                )
                status, error = "pending", None
            yield (
                alert.dedup_key,
                alert.opened_at,
                alert.sequence,
                name,
                alert.state,
                Jsonb(payload),
                status,
                error,
            )

    def enqueue(self, conn: psycopg.Connection, alerts: Iterable[Alert]) -> int:
        """Record the incidents and queue one row per route; returns the rows newly queued.

        Enqueueing the same alerts again (a replay) queues nothing.
        """
        alerts = list(alerts)
        if not alerts:
            return 0
        outbox = [row for alert in alerts for row in self._outbox_rows(alert)]
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(_UPSERT_ANOMALY, [self._anomaly_row(a) for a in alerts])
            if not outbox:
                return 0
            cur.executemany(_INSERT_OUTBOX, outbox)
            return max(cur.rowcount, 0)


class AlertOutboxWriter:
    """Enqueues batches of alerts with reconnects and retries (one per Bytewax worker)."""

    def __init__(
        self,
        url: str,
        config: AlertsConfig,
        *,
        backoff: Backoff | None = None,
        connect_timeout_s: float = 10.0,
    ):
        self._url = url
        self._outbox = AlertOutbox(config)
        self._backoff = backoff or Backoff()
        self._connect_timeout = int(max(connect_timeout_s, 1))
        self._conn: psycopg.Connection | None = None
        self.queued = 0

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                application_name="observatory-alerts",
            )
        return self._conn

    def _drop(self, _exc: BaseException) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def write(self, alerts: Iterable[Alert]) -> int:
        alerts = list(alerts)
        if not alerts:
            return 0
        queued = retry(
            lambda: self._outbox.enqueue(self._connection(), alerts),
            what=f"queueing {len(alerts)} alerts",
            retryable=(psycopg.OperationalError, psycopg.InterfaceError),
            backoff=self._backoff,
            on_retry=self._drop,
        )
        self.queued += queued
        return queued

    def close(self) -> None:
        self._drop(RuntimeError("close"))


class _OutboxPartition(StatelessSinkPartition[Alert]):
    def __init__(self, writer: AlertOutboxWriter):
        self._writer = writer

    def write_batch(self, items: list[Alert]) -> None:
        self._writer.write(items)

    def close(self) -> None:
        self._writer.close()


class AlertOutboxSink(DynamicSink[Alert]):
    """Bytewax sink: queues the lifecycle's alerts in the outbox (idempotently)."""

    def __init__(self, url: str, config: AlertsConfig, **writer_options: Any):
        self._url = url
        self._config = config
        self._options = writer_options

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OutboxPartition:
        return _OutboxPartition(AlertOutboxWriter(self._url, self._config, **self._options))


# --- dispatcher ------------------------------------------------------------------------------

_CLAIM = """
SELECT o.dedup_key, o.opened_at, o.sequence, o.route, o.state, o.payload, o.attempts,
       extract(epoch FROM clock_timestamp() - o.created_at)::float8 AS age_s
  FROM alert_outbox o
 WHERE o.status = 'pending'
   AND o.next_attempt_at <= %(cutoff)s
   AND o.route = ANY(%(routes)s)
   AND NOT EXISTS (
       SELECT 1 FROM alert_outbox e
        WHERE e.dedup_key = o.dedup_key AND e.route = o.route AND e.status = 'pending'
          AND (e.opened_at, e.sequence) < (o.opened_at, o.sequence))
 ORDER BY o.next_attempt_at, o.opened_at, o.sequence
 LIMIT 1
   FOR UPDATE OF o SKIP LOCKED
"""

_INCIDENT_DELIVERED = """
SELECT EXISTS (SELECT 1 FROM alert_outbox
                WHERE dedup_key = %s AND opened_at = %s AND route = %s
                  AND state = 'firing' AND status = 'delivered')
"""

_DELIVERED_LAST_HOUR = """
SELECT count(*) FROM alert_deliveries
 WHERE route = %s AND status = 'delivered' AND sent_at > clock_timestamp() - interval '1 hour'
"""

_RECORD = """
INSERT INTO alert_deliveries (dedup_key, opened_at, sequence, route, attempt, status,
                              http_status, error, duration_ms, sent_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp())
"""

_KEY = "dedup_key = %s AND opened_at = %s AND sequence = %s AND route = %s"
_MARK_DELIVERED = f"""UPDATE alert_outbox SET status = 'delivered', attempts = %s,
    delivered_at = clock_timestamp(), last_error = NULL WHERE {_KEY}"""
_MARK_RETRY = f"""UPDATE alert_outbox SET attempts = %s, last_error = %s,
    next_attempt_at = clock_timestamp() + make_interval(secs => %s) WHERE {_KEY}"""
_MARK_FINAL = f"""UPDATE alert_outbox SET status = %s, attempts = %s, last_error = %s
    WHERE {_KEY}"""


@dataclass(slots=True)
class DispatchStats:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    suppressed: int = 0

    @property
    def processed(self) -> int:
        return self.delivered + self.retried + self.failed + self.suppressed


class AlertDispatcher:
    """Delivers due outbox rows. Any number may run at once (rows are claimed
    with ``FOR UPDATE SKIP LOCKED``); each holds one database connection.

    ``before_send(row)`` is called after a row is claimed and before it is
    sent (instrumentation, and crash tests).
    """

    def __init__(
        self,
        database_url: str,
        routes: Mapping[str, Channel],
        *,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 300.0,
        poll_interval_s: float = 1.0,
        max_rows_per_run: int = 500,
        connect_timeout_s: float = 10.0,
        rng: random.Random | None = None,
        before_send: Callable[[Any], None] | None = None,
    ):
        self._url = database_url
        self.channels = dict(routes)
        self._backoff = Backoff(initial_s=retry_initial_s, max_s=retry_max_s)
        self._poll = poll_interval_s
        self._max_rows = max_rows_per_run
        self._connect_timeout = int(max(connect_timeout_s, 1))
        self._rng = rng or random.Random()
        self._before_send = before_send
        self._conn: psycopg.Connection | None = None
        self._scrub = Scrubber(c._secret.reveal() for c in self.channels.values())

    @classmethod
    def from_config(
        cls,
        database_url: str,
        config: AlertsConfig,
        *,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> AlertDispatcher:
        """Channels from the config (secrets resolved now), pace from the config."""
        options.setdefault("retry_initial_s", config.retry_initial_seconds)
        options.setdefault("retry_max_s", config.retry_max_seconds)
        options.setdefault("poll_interval_s", config.poll_interval_seconds)
        return cls(database_url, build_channels(config, env), **options)

    def __repr__(self) -> str:
        return f"<AlertDispatcher routes={sorted(self.channels)}>"

    # --- connection ----------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                application_name="observatory-alert-dispatcher",
            )
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        self._drop_connection()
        for channel in self.channels.values():
            channel.close()

    # --- running -------------------------------------------------------------------------

    def run_once(self) -> DispatchStats:
        """Deliver (one attempt each) the rows due now; returns what happened.

        Database outages are logged and end the run (rows stay pending);
        anything else propagates after its transaction is rolled back.
        """
        stats = DispatchStats()
        if not self.channels:
            return stats
        try:
            conn = self._connection()
            cutoff = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            for _ in range(self._max_rows):
                if not self._process_one(conn, cutoff, stats):
                    break
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._drop_connection()
            log.warning("alert dispatcher: database unavailable: %s", self._error_text(exc))
        return stats

    def run_forever(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set (for a background thread); never raises."""
        log.info("alert dispatcher started for routes: %s", ", ".join(sorted(self.channels)))
        errors = 0
        try:
            while not stop.is_set():
                busy = False
                try:
                    busy = self.run_once().processed >= self._max_rows
                    errors = 0
                except Exception as exc:
                    errors += 1
                    log.error("alert dispatcher: %s", self._error_text(exc))
                if not busy:  # after errors, back off (up to a minute) instead of spinning
                    stop.wait(min(60.0, self._poll * 2 ** min(errors, 16)))
        finally:
            self._drop_connection()  # the owner closes the channels (close())
            log.info("alert dispatcher stopped")

    def start(self, stop: threading.Event) -> threading.Thread:
        """Run :meth:`run_forever` in a daemon thread."""
        thread = threading.Thread(
            target=self.run_forever, args=(stop,), name="alert-dispatcher", daemon=True
        )
        thread.start()
        return thread

    def _error_text(self, exc: BaseException) -> str:
        return self._scrub(_one_line(f"{type(exc).__name__}: {exc}"))

    # --- one row -------------------------------------------------------------------------

    def _process_one(
        self, conn: psycopg.Connection, cutoff: datetime, stats: DispatchStats
    ) -> bool:
        with conn.transaction(), conn.cursor(row_factory=namedtuple_row) as cur:
            row = cur.execute(_CLAIM, {"cutoff": cutoff, "routes": list(self.channels)}).fetchone()
            if row is None:
                return False
            channel = self.channels[row.route]
            verdict = self._precheck(cur, row, channel)
            if verdict is not None:
                status, reason = verdict
                self._finish(cur, row, status, row.attempts, reason, None, None)
                setattr(stats, status, getattr(stats, status) + 1)
                log.info(
                    "alert %s #%d to %s %s: %s",
                    row.dedup_key,
                    row.sequence,
                    row.route,
                    status,
                    reason,
                )
                return True
            if self._before_send is not None:
                self._before_send(row)
            result = channel.send(row.payload)
            self._record_attempt(cur, row, channel, result, stats)
        return True

    def _precheck(self, cur: psycopg.Cursor, row: Any, channel: Channel) -> tuple[str, str] | None:
        """Why the row must not be sent now: ("suppressed" | "failed", reason), or None."""
        route = channel.route
        if row.state == "resolved":
            if not route.send_resolved:
                return "suppressed", "send_resolved is off for this route"
            key = (row.dedup_key, row.opened_at, row.route)
            if not cur.execute(_INCIDENT_DELIVERED, key).fetchone()[0]:
                return "suppressed", "no firing notification of this incident was delivered here"
            # The resolve of an incident the receiver knows: never capped nor expired
            # (that would leave the incident open there); only max_attempts applies.
            return None
        if row.age_s > route.max_age_seconds:
            return (
                "failed",
                f"expired: not delivered within max_age_seconds={route.max_age_seconds:g}",
            )
        if route.max_per_hour:
            sent = cur.execute(_DELIVERED_LAST_HOUR, (row.route,)).fetchone()[0]
            if sent >= route.max_per_hour:
                return "suppressed", f"hourly cap of {route.max_per_hour} notifications reached"
        return None

    def _record_attempt(
        self,
        cur: psycopg.Cursor,
        row: Any,
        channel: Channel,
        result: SendResult,
        stats: DispatchStats,
    ) -> None:
        route = channel.route
        attempt = row.attempts + 1
        where = f"alert {row.dedup_key} #{row.sequence} to {row.route}"
        if result.delivered:
            self._record(cur, row, attempt, "delivered", result, None)
            cur.execute(_MARK_DELIVERED, (attempt, *self._key(row)))
            stats.delivered += 1
            log.info("%s delivered (attempt %d)", where, attempt)
            return
        error = result.error or "unknown error"
        if result.outcome == "retry":
            if attempt >= route.max_attempts:
                error = f"gave up after {attempt} attempts: {error}"
            else:
                delay = _retry_delay(result, attempt, self._backoff, self._rng)
                ageless = row.state == "resolved"  # see _precheck
                if ageless or row.age_s + delay <= route.max_age_seconds:
                    self._record(cur, row, attempt, "retry", result, error)
                    cur.execute(_MARK_RETRY, (attempt, error, delay, *self._key(row)))
                    stats.retried += 1
                    log.warning(
                        "%s failed (%s); attempt %d of %d, next in %.1fs",
                        where,
                        error,
                        attempt,
                        route.max_attempts,
                        delay,
                    )
                    return
                error = f"gave up: a retry in {delay:.1f}s would pass max_age_seconds: {error}"
        self._finish(cur, row, "failed", attempt, error, result, attempt)
        stats.failed += 1
        log.error("%s failed for good: %s", where, error)

    @staticmethod
    def _key(row: Any) -> tuple:
        return (row.dedup_key, row.opened_at, row.sequence, row.route)

    def _record(
        self,
        cur: psycopg.Cursor,
        row: Any,
        attempt: int,
        status: str,
        result: SendResult | None,
        error: str | None,
    ) -> None:
        cur.execute(
            _RECORD,
            (
                *self._key(row),
                attempt,
                status,
                result.http_status if result else None,
                self._scrub(error) if error else None,
                result.duration_ms if result else None,
            ),
        )

    def _finish(
        self,
        cur: psycopg.Cursor,
        row: Any,
        status: str,
        attempts: int,
        error: str,
        result: SendResult | None,
        attempt: int | None,
    ) -> None:
        error = self._scrub(error)
        self._record(cur, row, attempt if attempt is not None else attempts, status, result, error)
        cur.execute(_MARK_FINAL, (status, attempts, error, *self._key(row)))
