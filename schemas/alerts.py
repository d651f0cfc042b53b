"""Alerts: the typed records and the payloads the notification channels get.

An :class:`Observation` is one detector's verdict about one subject's closed
event-time window, with the context an alert needs (observed, expected,
exemplar traces). :class:`~observatory.operators.alerting.AlertLifecycle`
turns a stream of them into :class:`Alert` s, one per notification: the
incident opens (``sequence`` 1), may be re-notified (2, 3, ...), and is
resolved (the last sequence). An incident is identified by its
``dedup_key`` (stable per kind and subject) and ``opened_at`` (the event
time it opened), so the same subject can have many incidents over time.

The payload builders are pure functions of an :class:`Alert`:

* :func:`slack_payload` — Slack incoming webhook: Block Kit ``blocks`` and
  the ``text`` fallback (https://api.slack.com/messaging/webhooks);
* :func:`pagerduty_payload` — PagerDuty Events API v2, *without* the
  ``routing_key`` (it is a secret, added at send time only);
* :func:`alertmanager_payload` — the Alertmanager webhook format, version 4
  (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config).

None of them includes a secret, so they can be stored in the outbox as is.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

__all__ = [
    "SEVERITIES",
    "Alert",
    "Observation",
    "RouteRule",
    "alert_as_dict",
    "alertmanager_payload",
    "dedup_key",
    "fmt_number",
    "pagerduty_payload",
    "rfc3339",
    "select_routes",
    "severity_rank",
    "slack_payload",
    "summarize",
    "trace_urls",
]

Severity = Literal["critical", "error", "warning", "info"]
AlertState = Literal["firing", "resolved"]
Scalar = str | int | float | bool | None

#: Least to most severe (PagerDuty's four levels).
SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")
#: PagerDuty: ``dedup_key`` is at most 255 characters.
MAX_DEDUP_KEY = 255
#: PagerDuty: ``payload.summary`` is at most 1024 characters.
MAX_SUMMARY = 1024
#: Exemplar traces shown (as text or links) in a notification.
MAX_TRACES_SHOWN = 5
#: Alertmanager's "zero" time: ``endsAt`` of an alert that is still firing.
AM_ZERO_TIME = "0001-01-01T00:00:00Z"

_READABLE = re.compile(r"^[A-Za-z0-9_.\-/@+]+$")
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_]")


def severity_rank(severity: str) -> int:
    """
    >>> severity_rank("info") < severity_rank("warning") < severity_rank("critical")
    True
    """
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ValueError(
            f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}"
        ) from None


# --- keys ------------------------------------------------------------------------------------


def _dims(
    subject: Iterable[tuple[str, str]] | Mapping[str, str], tenant: str = ""
) -> dict[str, str]:
    pairs = subject.items() if isinstance(subject, Mapping) else subject
    dims: dict[str, str] = {}
    for name, value in pairs:
        name, value = str(name), str(value)
        if dims.get(name, value) != value:
            raise ValueError(f"subject dimension {name!r} given twice with different values")
        dims[name] = value
    if tenant:
        if dims.get("tenant", tenant) != tenant:
            raise ValueError("the subject's tenant differs from the tenant")
        dims["tenant"] = tenant
    return dims


def dedup_key(
    kind: str, subject: Iterable[tuple[str, str]] | Mapping[str, str], tenant: str = ""
) -> str:
    """The stable identity of what an alert is about: kind plus sorted subject dimensions.

    Readable when every part is made of plain characters and it fits in 255
    characters; otherwise the kind plus a SHA-256 of the parts (still stable).
    The tenant counts as a dimension.

    >>> dedup_key("cost_spike", {"service": "chat", "model": "gpt-4o"}, tenant="acme")
    'cost_spike:model=gpt-4o,service=chat,tenant=acme'
    >>> dedup_key("cost_spike", [("model", "gpt 4o")])
    'cost_spike:sha256:21e6463a52fe0b6ebd5be91313e0c68c'
    """
    dims = sorted(_dims(subject, tenant).items())
    readable = f"{kind}:" + ",".join(f"{name}={value}" for name, value in dims)
    plain = _READABLE.match(kind) and all(
        _READABLE.match(name) and _READABLE.match(value) for name, value in dims
    )
    if plain and len(readable) <= MAX_DEDUP_KEY:
        return readable
    digest = hashlib.sha256(json.dumps([kind, dims], ensure_ascii=False).encode()).hexdigest()
    prefix = kind if _READABLE.match(kind) else "alert"
    return f"{prefix[:200]}:sha256:{digest[:32]}"


# --- records ---------------------------------------------------------------------------------


def _utc(value: datetime | float | int, what: str) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{what} must be timezone-aware")
        return value.astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return datetime.fromtimestamp(value, UTC)
    raise TypeError(f"{what} must be a datetime or epoch seconds, not {type(value).__name__}")


def _pairs(value: Iterable[tuple[str, Any]] | Mapping[str, Any] | None) -> tuple:
    if value is None:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(k), v) for k, v in items)


def _float(value: float | int | None) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class Observation:
    """One detector verdict about one subject's closed window, with its context.

    ``subject`` may be given as a mapping; it is stored as a tuple of
    ``(name, value)`` pairs in the given order (the order alerts show them).
    Times may be given as epoch seconds; they are stored as UTC datetimes.
    ``dedup_key`` is computed from kind, subject and tenant unless given.
    """

    kind: str
    subject: tuple[tuple[str, str], ...]
    window_start: datetime
    window_end: datetime
    anomalous: bool
    score: float
    observed: float | None
    expected: float | None
    detector: str = ""
    tenant: str = ""
    severity: Severity = "warning"
    #: What was measured, with its unit if any, e.g. ``cost_usd`` or ``latency_p95_ms``.
    metric: str = ""
    exemplar_trace_ids: tuple[str, ...] = ()
    session_id: str = ""
    details: tuple[tuple[str, Scalar], ...] = ()
    dedup_key: str = ""

    def __post_init__(self) -> None:
        dims = _dims(self.subject)  # validates
        pairs = tuple(dims.items())
        set_ = object.__setattr__
        set_(self, "subject", pairs)
        set_(self, "window_start", _utc(self.window_start, "window_start"))
        set_(self, "window_end", _utc(self.window_end, "window_end"))
        set_(self, "score", float(self.score))
        set_(self, "observed", _float(self.observed))
        set_(self, "expected", _float(self.expected))
        set_(self, "anomalous", bool(self.anomalous))
        set_(self, "exemplar_trace_ids", tuple(str(t) for t in self.exemplar_trace_ids if t))
        set_(self, "details", _pairs(self.details))
        severity_rank(self.severity)
        if self.window_end < self.window_start:
            raise ValueError("window_end is before window_start")
        if not self.kind:
            raise ValueError("kind is empty")
        if not self.dedup_key:
            set_(self, "dedup_key", dedup_key(self.kind, pairs, self.tenant))
        elif len(self.dedup_key) > MAX_DEDUP_KEY:
            raise ValueError(f"dedup_key is longer than {MAX_DEDUP_KEY} characters")

    @classmethod
    def from_verdict(
        cls,
        verdict: Any,
        *,
        kind: str,
        subject: Iterable[tuple[str, str]] | Mapping[str, str],
        window_start: datetime | float,
        window_end: datetime | float,
        **context: Any,
    ) -> Observation:
        """From a detector verdict (anything with ``anomalous``, ``score``,
        ``observed``, ``expected`` and optionally ``reason``), plus context."""
        details = dict(_pairs(context.pop("details", None)))
        reason = getattr(verdict, "reason", "")
        if reason:
            details.setdefault("reason", reason)
        return cls(
            kind=kind,
            subject=subject,  # type: ignore[arg-type]  # normalised in __post_init__
            window_start=window_start,  # type: ignore[arg-type]
            window_end=window_end,  # type: ignore[arg-type]
            anomalous=verdict.anomalous,
            score=verdict.score,
            observed=verdict.observed,
            expected=verdict.expected,
            details=tuple(details.items()),
            **context,
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification about one incident: open, re-notify, or resolve.

    ``sequence`` counts the notifications of the incident ``(dedup_key,
    opened_at)``: the open is 1, each re-notification adds one, and the
    resolve is the last. ``detected_at`` is the event time of the window end
    that caused this notification (never the wall clock), so a replay of the
    same input produces equal alerts.
    """

    dedup_key: str
    sequence: int
    state: AlertState
    kind: str
    detector: str
    severity: Severity
    tenant: str
    subject: tuple[tuple[str, str], ...]
    summary: str
    observed: float | None
    expected: float | None
    score: float
    window_start: datetime
    window_end: datetime
    detected_at: datetime
    #: Event time the incident opened (= ``detected_at`` of its sequence-1 alert).
    opened_at: datetime
    metric: str = ""
    exemplar_trace_ids: tuple[str, ...] = ()
    session_id: str = ""
    details: tuple[tuple[str, Scalar], ...] = ()
    #: Names of the configured routes this notification goes to.
    routes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.state not in ("firing", "resolved"):
            raise ValueError(f"state must be firing or resolved, not {self.state!r}")
        severity_rank(self.severity)
        if self.sequence < 1:
            raise ValueError("sequence starts at 1")
        if not self.dedup_key or len(self.dedup_key) > MAX_DEDUP_KEY:
            raise ValueError(f"dedup_key must have 1 to {MAX_DEDUP_KEY} characters")
        for name in ("window_start", "window_end", "detected_at", "opened_at"):
            if getattr(self, name).tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")

    @property
    def firing(self) -> bool:
        return self.state == "firing"

    @property
    def dimensions(self) -> dict[str, str]:
        """Tenant (if any) and the subject's dimensions, in display order."""
        dims = {"tenant": self.tenant} if self.tenant else {}
        dims.update(self.subject)
        return dims

    @property
    def notification(self) -> str:
        """open, renotify, escalation or resolve (from ``details``; derived if absent)."""
        value = dict(self.details).get("notification")
        if isinstance(value, str):
            return value
        if not self.firing:
            return "resolve"
        return "open" if self.sequence == 1 else "renotify"


@dataclass(frozen=True, slots=True)
class RouteRule:
    """Which alerts a route gets: all of ``kinds`` / ``tenants`` (empty = any)
    at ``min_severity`` or above."""

    name: str
    kinds: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    min_severity: Severity = "info"

    def matches(self, kind: str, tenant: str, severity: str) -> bool:
        return (
            (not self.kinds or kind in self.kinds)
            and (not self.tenants or tenant in self.tenants)
            and severity_rank(severity) >= severity_rank(self.min_severity)
        )


def select_routes(rules: Iterable[RouteRule], kind: str, tenant: str, severity: str) -> tuple:
    """Names of the routes whose rule matches, in rule order.

    >>> rules = [RouteRule("slack"), RouteRule("pager", min_severity="critical")]
    >>> select_routes(rules, "cost_spike", "acme", "warning")
    ('slack',)
    >>> select_routes(rules, "cost_spike", "acme", "critical")
    ('slack', 'pager')
    """
    return tuple(rule.name for rule in rules if rule.matches(kind, tenant, severity))


# --- formatting ------------------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    """
    >>> rfc3339(datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
    '2026-03-01T10:00:00Z'
    """
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def fmt_number(value: float | None) -> str:
    """A number for humans: at most 4 significant digits below 1000, thousands separated above.

    >>> [fmt_number(v) for v in (12.345, 2.0, 1234567.8, 0.000123, None, float("nan"))]
    ['12.35', '2', '1,234,568', '0.000123', 'n/a', 'nan']
    """
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _fmt_time(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%H:%M:%S" if moment.second or moment.microsecond else "%H:%M")


def fmt_window(start: datetime, end: datetime) -> str:
    """
    >>> a = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    >>> fmt_window(a, a.replace(minute=1))
    '2026-03-01 10:00-10:01 UTC'
    """
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if start.date() == end.date():
        return f"{start:%Y-%m-%d} {_fmt_time(start)}-{_fmt_time(end)} UTC"
    return f"{start:%Y-%m-%d} {_fmt_time(start)} - {end:%Y-%m-%d} {_fmt_time(end)} UTC"


def subject_text(tenant: str, subject: Iterable[tuple[str, str]]) -> str:
    """
    >>> subject_text("acme", [("service", "chat"), ("model", "gpt-4o")])
    'tenant=acme service=chat model=gpt-4o'
    """
    dims = {"tenant": tenant} if tenant else {}
    dims.update(subject)
    return " ".join(f"{name}={value}" for name, value in dims.items())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(
    *,
    kind: str,
    tenant: str,
    subject: Iterable[tuple[str, str]],
    observed: float | None,
    expected: float | None,
    score: float,
    window_start: datetime,
    window_end: datetime,
    metric: str = "",
    resolved: bool = False,
    resolve_note: str = "",
) -> str:
    """The one-line human summary of an alert (at most 1024 characters).

    >>> a = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    >>> line = summarize(kind="cost_spike", tenant="acme", subject=[("model", "gpt-4o")],
    ...                  observed=12.4, expected=2.1, score=8.25, metric="cost_usd",
    ...                  window_start=a, window_end=a.replace(minute=1))
    >>> print(line.replace(", ", ",\\n"))
    cost_spike tenant=acme model=gpt-4o: cost_usd observed 12.4 vs expected 2.1 (score 8.25),
    window 2026-03-01 10:00-10:01 UTC
    """
    what = f"{metric} " if metric else ""
    values = f"{what}observed {fmt_number(observed)} vs expected {fmt_number(expected)}"
    where = f"{kind} {subject_text(tenant, subject)}".strip()
    window = fmt_window(window_start, window_end)
    if resolved:
        note = f"{resolve_note}; " if resolve_note else ""
        line = f"Resolved: {where}: {note}last {values}, window {window}"
    else:
        line = f"{where}: {values} (score {fmt_number(score)}), window {window}"
    return _clip(line, MAX_SUMMARY)


def trace_urls(alert: Alert, template: str | None) -> list[tuple[str, str | None]]:
    """``(trace_id, url or None)`` of the exemplar traces shown (at most 5).

    ``template`` contains ``{trace_id}``, e.g. ``https://jaeger.example/trace/{trace_id}``;
    the id is percent-encoded.
    """
    shown = alert.exemplar_trace_ids[:MAX_TRACES_SHOWN]
    if not template:
        return [(trace_id, None) for trace_id in shown]
    return [(t, template.replace("{trace_id}", quote(t, safe=""))) for t in shown]


def _json_number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    return value if value is not None and math.isfinite(value) else None


def _json_scalar(value: Any) -> Any:
    if isinstance(value, float):
        return _json_number(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _status(alert: Alert) -> str:
    if not alert.firing:
        return "RESOLVED"
    return "FIRING" if alert.sequence == 1 else "STILL FIRING"


def _details(alert: Alert) -> dict[str, Any]:
    return {name: _json_scalar(value) for name, value in alert.details}


def alert_as_dict(alert: Alert) -> dict[str, Any]:
    """Every field as JSON-compatible values (non-finite numbers become null)."""
    return {
        "dedup_key": alert.dedup_key,
        "sequence": alert.sequence,
        "state": alert.state,
        "kind": alert.kind,
        "detector": alert.detector,
        "severity": alert.severity,
        "tenant": alert.tenant,
        "subject": dict(alert.subject),
        "summary": alert.summary,
        "metric": alert.metric,
        "observed": _json_number(alert.observed),
        "expected": _json_number(alert.expected),
        "score": _json_number(alert.score),
        "window_start": rfc3339(alert.window_start),
        "window_end": rfc3339(alert.window_end),
        "detected_at": rfc3339(alert.detected_at),
        "opened_at": rfc3339(alert.opened_at),
        "exemplar_trace_ids": list(alert.exemplar_trace_ids),
        "session_id": alert.session_id,
        "details": _details(alert),
        "routes": list(alert.routes),
    }


# --- Slack -----------------------------------------------------------------------------------

#: Block Kit limits: header text, section text, one field, context text.
_SLACK_HEADER = 150
_SLACK_SECTION = 3000
_SLACK_FIELD = 2000
_SLACK_FALLBACK = 3000
_SLACK_EMOJI = {
    "FIRING": ":rotating_light:",
    "STILL FIRING": ":repeat:",
    "RESOLVED": ":white_check_mark:",
}


def _esc(text: str) -> str:
    """Slack mrkdwn: &, < and > must be escaped (else ``<...>`` becomes a link or mention)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return "`" + _esc(text).replace("`", "'") + "`"


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def slack_payload(alert: Alert, *, trace_url_template: str | None = None) -> dict[str, Any]:
    """Body for a Slack incoming webhook: ``text`` (notification fallback) and ``blocks``."""
    status = _status(alert)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _clip(f"{_SLACK_EMOJI[status]} {status}: {alert.kind}", _SLACK_HEADER),
                "emoji": True,
            },
        },
        {"type": "section", "text": _mrkdwn(_clip(_esc(alert.summary), _SLACK_SECTION))},
        {
            "type": "section",
            "fields": [
                _mrkdwn(_clip(f"*{name}*\n{_esc(value)}", _SLACK_FIELD))
                for name, value in (
                    ("Observed", fmt_number(alert.observed)),
                    ("Expected", fmt_number(alert.expected)),
                    ("Score", fmt_number(alert.score)),
                    ("Severity", alert.severity),
                    ("Window", fmt_window(alert.window_start, alert.window_end)),
                    ("Metric", alert.metric or "n/a"),
                )
            ],
        },
    ]
    dims = alert.dimensions
    if dims:
        text = "*Dimensions*\n" + " · ".join(f"{_code(k)} = {_esc(v)}" for k, v in dims.items())
        blocks.append({"type": "section", "text": _mrkdwn(_clip(text, _SLACK_SECTION))})
    traces = trace_urls(alert, trace_url_template)
    if traces:
        shown = ", ".join(f"<{url}|{_esc(t)}>" if url else _code(t) for t, url in traces)
        blocks.append(
            {
                "type": "section",
                "text": _mrkdwn(_clip(f"*Exemplar traces*\n{shown}", _SLACK_SECTION)),
            }
        )
    context = [f"detector {_code(alert.detector or alert.kind)}"]
    if alert.session_id:
        context.append(f"session {_code(alert.session_id)}")
    context.append(f"notification #{alert.sequence}")
    context.append(f"key {_code(alert.dedup_key)}")
    blocks.append(
        {"type": "context", "elements": [_mrkdwn(_clip(" · ".join(context), _SLACK_FIELD))]}
    )
    return {"text": _clip(f"[{status}] {alert.summary}", _SLACK_FALLBACK), "blocks": blocks}


# --- PagerDuty -------------------------------------------------------------------------------


def pagerduty_payload(alert: Alert, *, trace_url_template: str | None = None) -> dict[str, Any]:
    """Events API v2 body *without* ``routing_key`` (the sender adds it).

    A resolve is just ``event_action`` and ``dedup_key``, as documented.
    Mapping: ``source`` = the subject (the affected system), ``component`` =
    the detector, ``group`` = the tenant, ``class`` = the alert kind.
    """
    if not alert.firing:
        return {"event_action": "resolve", "dedup_key": alert.dedup_key}
    traces = trace_urls(alert, trace_url_template)
    payload: dict[str, Any] = {
        "summary": _clip(alert.summary, MAX_SUMMARY),
        "source": _clip(subject_text(alert.tenant, alert.subject) or alert.kind, 255),
        "severity": alert.severity,
        "timestamp": rfc3339(alert.detected_at),
        "component": alert.detector or alert.kind,
        "class": alert.kind,
    }
    if alert.tenant:
        payload["group"] = alert.tenant
    payload["custom_details"] = {
        "observed": _json_number(alert.observed),
        "expected": _json_number(alert.expected),
        "score": _json_number(alert.score),
        "metric": alert.metric,
        "window_start": rfc3339(alert.window_start),
        "window_end": rfc3339(alert.window_end),
        "dimensions": alert.dimensions,
        "exemplar_trace_ids": list(alert.exemplar_trace_ids),
        "trace_urls": [url for _, url in traces if url],
        "session_id": alert.session_id or None,
        "detector": alert.detector,
        "notification": alert.sequence,
        "opened_at": rfc3339(alert.opened_at),
        "details": _details(alert),
    }
    body: dict[str, Any] = {
        "event_action": "trigger",
        "dedup_key": alert.dedup_key,
        "payload": payload,
        "client": "Observatory",
    }
    links = [{"href": url, "text": f"Trace {t}"} for t, url in traces if url]
    if links:
        body["links"] = links
    return body


# --- Alertmanager webhook (v4) ---------------------------------------------------------------


def _label_name(name: str) -> str:
    """Prometheus label names match ``[a-zA-Z_][a-zA-Z0-9_]*``."""
    label = _LABEL_CHARS.sub("_", name) or "_"
    return f"_{label}" if label[0].isdigit() else label


def alert_labels(alert: Alert) -> dict[str, str]:
    """``alertname`` (the kind), ``severity``, ``detector``, tenant and subject dimensions."""
    labels = {"alertname": alert.kind, "severity": alert.severity}
    if alert.detector:
        labels["detector"] = alert.detector
    for name, value in alert.dimensions.items():
        label = _label_name(name)
        if label in labels:
            label = f"subject_{label}"
        labels[label] = value
    return labels


def fingerprint(alert: Alert) -> str:
    """16 hex digits, stable per dedup key (like Alertmanager's label-set fingerprints)."""
    return hashlib.sha256(alert.dedup_key.encode()).hexdigest()[:16]


def alertmanager_payload(
    alert: Alert,
    *,
    receiver: str,
    trace_url_template: str | None = None,
    external_url: str = "",
) -> dict[str, Any]:
    """An Alertmanager webhook v4 message carrying this one alert."""
    traces = trace_urls(alert, trace_url_template)
    labels = alert_labels(alert)
    window = fmt_window(alert.window_start, alert.window_end)
    description = (
        f"{'Resolved. ' if not alert.firing else ''}Observed {fmt_number(alert.observed)}, "
        f"expected {fmt_number(alert.expected)}, score {fmt_number(alert.score)}, "
        f"window {window}."
    )
    annotations = {
        "summary": alert.summary,
        "description": description,
        "observed": fmt_number(alert.observed),
        "expected": fmt_number(alert.expected),
        "score": fmt_number(alert.score),
        "metric": alert.metric,
        "window_start": rfc3339(alert.window_start),
        "window_end": rfc3339(alert.window_end),
        "exemplar_trace_ids": ",".join(alert.exemplar_trace_ids),
        "trace_urls": " ".join(url for _, url in traces if url),
        "session_id": alert.session_id,
        "dedup_key": alert.dedup_key,
        "notification": str(alert.sequence),
    }
    annotations = {k: v for k, v in annotations.items() if v}
    item = {
        "status": alert.state,
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(alert.opened_at),
        "endsAt": AM_ZERO_TIME if alert.firing else rfc3339(alert.detected_at),
        "generatorURL": next((url for _, url in traces if url), ""),
        "fingerprint": fingerprint(alert),
    }
    return {
        "version": "4",
        "groupKey": alert.dedup_key,
        "truncatedAlerts": 0,
        "status": alert.state,
        "receiver": receiver,
        "groupLabels": {"alertname": alert.kind},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [item],
    }
