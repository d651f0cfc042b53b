"""Decode the OpenTelemetry Collector's Kafka metric records into :class:`MetricPoint`.

One Kafka record holds one serialized ``MetricsData``/``ExportMetricsServiceRequest``
(``otlp_proto``; both are ``repeated ResourceMetrics resource_metrics = 1`` on
the wire) or its OTLP/JSON form (``otlp_json``: camelCase keys, int64 as
strings, enums as numbers or names). Metrics are always one batch per record.

Only the GenAI metrics the statistics use are kept (:data:`GENAI_METRICS`);
the data points of every other metric are counted as ``skipped_non_genai``.

=================================================  ==============  ==========================
metric                                             kind            forms accepted
=================================================  ==============  ==========================
``gen_ai.client.operation.duration`` (s)           ``duration``    histogram, exp. histogram
``gen_ai.client.token.usage`` ({token})            ``token_input``/``token_output`` by
                                                                   ``gen_ai.token.type``;
                                                                   histogram, exp. histogram,
                                                                   monotonic sum
``gen_ai.client.operation.time_to_first_chunk``    ``ttft``        histogram, exp. histogram
``gen_ai.server.time_to_first_token`` (s)          ``ttft``        histogram, exp. histogram
``gen_ai.usage.cost`` (USD, OpenLIT)               ``cost``        histogram, exp. histogram,
                                                                   monotonic sum
=================================================  ==============  ==========================

Forms: some SDKs record token usage or cost with a *Counter* (a monotonic
``Sum``): those points are kept (form ``sum``, ``count`` 0, the value in
``sum``) because tokens and cost are additive. A duration or TTFT as a Sum,
any Gauge, Summary or non-monotonic Sum, and points flagged
``NO_RECORDED_VALUE`` are counted as ``skipped_unsupported``: a gauge of
tokens or a sum of latencies cannot be turned into calls or quantiles.
Exponential histograms are embedded losslessly as explicit buckets
(``bounds[j] = base**(offset + j)``, the zero bucket first).
``gen_ai.server.request.duration`` is not read by default: a self-hosted
model server and its clients would count every call twice. Pass
``metrics=`` to change the table.

Units: ``duration`` and ``ttft`` values (sum, min, max, bounds, exemplars)
are converted to **milliseconds** (unit ``s``, or empty as the conventions
prescribe, ``ms``, ``us``, ``ns``; anything else is dead-lettered as
``unsupported_unit``). Token and cost values are taken as they are.

:meth:`MetricsDecoder.decode` never raises: every record comes back as
points, skipped points and dead letters with a reason. A bad data point is
dead-lettered alone as a valid one-point record of the same encoding.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.metrics.v1.metrics_pb2 import MetricsData

from observatory.schemas import dialects
from observatory.schemas.dialects import Limits, Reject, checked_text, normalize_provider
from observatory.schemas.otlp import (
    AUTO,
    ENCODINGS,
    PROTO,
    _any_value,
    _json_any_value,
    _json_id,
    _json_int,
    record_encoding,
)
from observatory.schemas.pricing import PriceTable
from observatory.schemas.records import DeadLetter, SourceRef

# --- kinds, forms, temporalities ----------------------------------------------------

DURATION = "duration"
TOKEN_INPUT = "token_input"
TOKEN_OUTPUT = "token_output"
TTFT = "ttft"
COST = "cost"
#: The kinds a :class:`MetricPoint` can have.
KINDS = (DURATION, TOKEN_INPUT, TOKEN_OUTPUT, TTFT, COST)
#: A metric family: ``tokens`` is split into input/output by ``gen_ai.token.type``.
TOKENS = "tokens"
FAMILIES = (DURATION, TOKENS, TTFT, COST)

DELTA = "delta"
CUMULATIVE = "cumulative"

HISTOGRAM = "histogram"
EXPONENTIAL = "exponential_histogram"
SUM = "sum"

#: Metric name -> family. The default table; ``MetricsDecoder(metrics=...)`` replaces it.
GENAI_METRICS: Mapping[str, str] = {
    "gen_ai.client.operation.duration": DURATION,
    "gen_ai.client.token.usage": TOKENS,
    "gen_ai.client.operation.time_to_first_chunk": TTFT,
    "gen_ai.server.time_to_first_token": TTFT,
    "gen_ai.usage.cost": COST,
}
TOKEN_TYPE = "gen_ai.token.type"
#: ``gen_ai.token.type`` values (``prompt``/``completion`` from older instrumentations).
TOKEN_TYPES = {
    "input": TOKEN_INPUT,
    "output": TOKEN_OUTPUT,
    "prompt": TOKEN_INPUT,
    "completion": TOKEN_OUTPUT,
}
#: Factor from a time metric's unit to milliseconds. Empty: the conventions say seconds.
TIME_UNITS = {
    "s": 1000.0,
    "": 1000.0,
    "ms": 1.0,
    "us": 1e-3,
    "µs": 1e-3,
    "μs": 1e-3,
    "ns": 1e-6,
}
#: A point with more buckets than this is rejected (explicit or exponential).
MAX_BUCKETS = 4096
_NO_RECORDED_VALUE = 1
_TEMPORALITIES = {
    1: DELTA,
    2: CUMULATIVE,
    "1": DELTA,
    "2": CUMULATIVE,
    "AGGREGATION_TEMPORALITY_DELTA": DELTA,
    "AGGREGATION_TEMPORALITY_CUMULATIVE": CUMULATIVE,
    "DELTA": DELTA,
    "CUMULATIVE": CUMULATIVE,
}
_JSON_FORMS = (
    ("histogram", HISTOGRAM),
    ("exponentialHistogram", EXPONENTIAL),
    ("exponential_histogram", EXPONENTIAL),
    ("sum", SUM),
    ("gauge", "gauge"),
    ("summary", "summary"),
)
_MAX_EXEMPLARS = 3


@dataclass(slots=True)
class MetricPoint:
    """One GenAI data point with resolved dimensions, in canonical units.

    ``duration``/``ttft`` values are milliseconds, tokens are tokens, cost is
    USD. ``bucket_counts[i]`` counts values in ``(bounds[i-1], bounds[i]]``
    (the first bucket is unbounded below, the last above); both are empty when
    the point carries no buckets (and always for the ``sum`` form, whose
    ``count`` is 0 and whose value is ``sum``).

    >>> p = MetricPoint("ab", DURATION, DELTA, 1, 2, count=1, sum=5.0, model="gpt-4o")
    >>> p.key
    ('default', '', '', 'gpt-4o', 'other', '')
    """

    series_id: str  #: stable hash of the stream's identity (see :meth:`MetricsDecoder.decode`)
    kind: str  #: one of :data:`KINDS`
    temporality: str  #: ``delta`` or ``cumulative``
    start_ns: int  #: start of the interval (0: unknown)
    time_ns: int  #: end of the interval: the event time
    count: int = 0
    sum: float | None = None
    bounds: tuple[float, ...] = ()
    bucket_counts: tuple[int, ...] = ()
    min: float | None = None
    max: float | None = None
    tenant: str = "default"
    service: str = ""
    provider: str = ""
    model: str = ""
    operation: str = "other"
    is_error: bool = False
    error_type: str = ""
    metric: str = ""  #: the OTLP metric name
    form: str = HISTOGRAM  #: ``histogram``, ``exponential_histogram`` or ``sum``
    #: (value, trace id hex) of up to 3 exemplars, largest first (duration points only).
    exemplars: tuple[tuple[float, str], ...] = ()

    @property
    def key(self) -> tuple[str, str, str, str, str, str]:
        """The statistics key, ``operators.stats.StatsKey``: a function of the series."""
        # Metrics carry no tool name: the tool dimension is empty.
        return (self.tenant, self.service, self.provider, self.model, self.operation, "")


@dataclass(slots=True)
class MetricsDecodeCounters:
    """How the data points of a batch were accounted for.

    ``points == normalized + skipped_non_genai + skipped_unsupported +
    dead_lettered_points`` for every record that was not dead-lettered whole.
    """

    records: int = 0
    points: int = 0
    normalized: int = 0
    skipped_non_genai: int = 0
    skipped_unsupported: int = 0
    dead_lettered_points: int = 0
    dead_lettered_records: int = 0

    def add(self, other: MetricsDecodeCounters) -> None:
        self.records += other.records
        self.points += other.points
        self.normalized += other.normalized
        self.skipped_non_genai += other.skipped_non_genai
        self.skipped_unsupported += other.skipped_unsupported
        self.dead_lettered_points += other.dead_lettered_points
        self.dead_lettered_records += other.dead_lettered_records

    def values(self) -> tuple[tuple[str, int], ...]:
        """(name, value) pairs, named for the ``pipeline_counters`` table."""
        return (
            ("metric_records", self.records),
            ("metric_points", self.points),
            ("metric_points_normalized", self.normalized),
            ("metric_points_skipped_non_genai", self.skipped_non_genai),
            ("metric_points_skipped_unsupported", self.skipped_unsupported),
            ("metric_points_dead_lettered", self.dead_lettered_points),
            ("metric_records_dead_lettered", self.dead_lettered_records),
        )


@dataclass(slots=True)
class MetricsDecodeResult:
    points: list[MetricPoint] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    counters: MetricsDecodeCounters = field(default_factory=MetricsDecodeCounters)


# --- helpers ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Raw:
    """A data point read from either encoding, before validation."""

    attrs: dict[str, Any]
    start_ns: int
    time_ns: int
    count: int = 0
    sum: float | None = None
    bounds: list[float] = field(default_factory=list)
    bucket_counts: list[int] = field(default_factory=list)
    min: float | None = None
    max: float | None = None
    flags: int = 0
    exemplars: list[tuple[float, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Metric:
    """What every point of one metric shares."""

    name: str
    unit: str
    family: str
    form: str
    temporality: Any  # the raw value; checked per point
    resource_attrs: Mapping[str, Any]
    series_prefix: bytes


def _first(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _exp_bound(scale: int, index: int) -> float:
    """``base**index`` with ``base = 2**(2**-scale)``; the same float for the same bound
    at any scale (so downscaled layouts line up exactly)."""
    if scale <= 0:
        return math.ldexp(1.0, index << -scale)
    return 2.0 ** (index / (1 << scale))


def _exponential_buckets(
    scale: int, offset: int, counts: Sequence[int], zero_count: int
) -> tuple[list[float], list[int]]:
    """Explicit bounds/counts holding exactly the buckets of an exponential histogram."""
    if not -10 <= scale <= 20:
        raise Reject("invalid_metric", f"exponential scale {scale} is outside [-10, 20]")
    if len(counts) > MAX_BUCKETS:
        raise Reject("invalid_metric", f"{len(counts)} buckets (limit {MAX_BUCKETS})")
    if not counts:
        return [], [zero_count]
    try:
        bounds = [_exp_bound(scale, offset + j) for j in range(len(counts) + 1)]
    except (OverflowError, ValueError):
        raise Reject("invalid_metric", f"exponential offset {offset} is out of range") from None
    return bounds, [zero_count, *counts, 0]


def _uint(value: Any, name: str) -> int:
    """A non-negative integer from OTLP/JSON (a number or a decimal string)."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise Reject("invalid_metric", f"{name} is a boolean")
    if isinstance(value, float):
        if not value.is_integer():
            raise Reject("invalid_metric", f"{name}={value} is not a whole number")
        value = int(value)
    elif isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise Reject("invalid_metric", f"{name}={value[:40]!r} is not an integer") from None
    elif not isinstance(value, int):
        raise Reject("invalid_metric", f"{name} has type {type(value).__name__}")
    if value < 0 or value >= 1 << 64:
        raise Reject("invalid_metric", f"{name}={value} is negative or too large")
    return value


def _sint(value: Any, name: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise Reject("invalid_metric", f"{name} is not an integer")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise Reject("invalid_metric", f"{name}={str(value)[:40]!r} is not an integer") from None
    if number != value and not isinstance(value, str):
        raise Reject("invalid_metric", f"{name}={value} is not a whole number")
    return number


def _double(value: Any, name: str) -> float | None:
    """A double from OTLP/JSON: a number, or a string such as ``"NaN"`` / ``"Infinity"``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Reject("invalid_metric", f"{name} is a boolean")
    if isinstance(value, int | float | str):
        try:
            return float(value)
        except (ValueError, OverflowError):
            pass
    raise Reject("invalid_metric", f"{name}={str(value)[:40]!r} is not a number")


def _uint_list(values: Any, name: str) -> list[int]:
    if values is None:
        return []
    if not isinstance(values, list):
        raise Reject("invalid_metric", f"{name} is not an array")
    return [_uint(v, name) for v in values]


def _double_list(values: Any, name: str) -> list[float]:
    if values is None:
        return []
    if not isinstance(values, list):
        raise Reject("invalid_metric", f"{name} is not an array")
    out = []
    for v in values:
        number = _double(v, name)
        if number is None:
            raise Reject("invalid_metric", f"{name} holds null")
        out.append(number)
    return out


def _get(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _non_negative(value: float | None, name: str) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise Reject("invalid_metric", f"{name}={value} is not a finite non-negative number")


class MetricsDecoder:
    """Turn one Kafka metrics record into :class:`MetricPoint` values.

    The knobs are those of :class:`~observatory.schemas.otlp.TraceDecoder`;
    ``prices`` only fills in a provider the point did not name (as for spans),
    so metric points and spans of one model land under the same key.

    >>> from opentelemetry.proto.metrics.v1.metrics_pb2 import MetricsData
    >>> data = MetricsData()
    >>> rm = data.resource_metrics.add()
    >>> kv = rm.resource.attributes.add(); kv.key = "service.name"; kv.value.string_value = "api"
    >>> metric = rm.scope_metrics.add().metrics.add()
    >>> metric.name, metric.unit = "gen_ai.client.operation.duration", "s"
    >>> metric.histogram.aggregation_temporality = 1
    >>> point = metric.histogram.data_points.add()
    >>> point.time_unix_nano, point.count, point.sum = 1_750_000_060 * 10**9, 2, 1.5
    >>> point.explicit_bounds.extend([0.5, 1.0]); point.bucket_counts.extend([1, 1, 0])
    >>> kv = point.attributes.add(); kv.key = "gen_ai.request.model"
    >>> kv.value.string_value = "gpt-4o"
    >>> result = MetricsDecoder().decode(data.SerializeToString(), SourceRef("otlp_metrics", 0, 0))
    >>> p = result.points[0]
    >>> (p.kind, p.temporality, p.count, p.sum, p.bounds)
    ('duration', 'delta', 2, 1500.0, (500.0, 1000.0))
    >>> p.key  # provider from the price table, operation "chat" as for spans
    ('default', 'api', 'openai', 'gpt-4o', 'chat', '')
    """

    def __init__(
        self,
        *,
        tenant_keys: Sequence[str] = ("tenant.id",),
        limits: Limits | None = None,
        prices: PriceTable | None = None,
        default_encoding: str = AUTO,
        max_record_bytes: int = 64 * 1024 * 1024,
        metrics: Mapping[str, str] | None = None,
        now: Any = time.time,
    ):
        if default_encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, not {default_encoding!r}")
        table = dict(GENAI_METRICS if metrics is None else metrics)
        for name, family in table.items():
            if family not in FAMILIES:
                raise ValueError(f"metric {name!r}: family must be one of {FAMILIES}")
        self.metrics = table
        self.tenant_keys = tuple(tenant_keys)
        self.limits = limits or Limits()
        self.prices = prices if prices is not None else PriceTable.bundled()
        self.default_encoding = default_encoding
        self.max_record_bytes = max_record_bytes
        self._now = now
        # Equal bucket layouts share one tuple: smaller delta state and snapshots.
        self._bounds: dict[tuple[float, ...], tuple[float, ...]] = {}

    # --- entry point ----------------------------------------------------------

    def decode(
        self,
        value: bytes | None,
        source: SourceRef,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> MetricsDecodeResult:
        """Decode one record.

        A point's ``series_id`` is a 128-bit BLAKE2b hash of its stream
        identity in the OpenTelemetry data model: *all* resource attributes,
        scope name and version, metric name, unit and form, and *all* point
        attributes (sorted). It is the same for the proto and JSON encodings
        of the same data.
        """
        result = MetricsDecodeResult()
        result.counters.records = 1
        headers = list(headers or [])
        try:
            self._decode(value, source, headers, result)
        except Reject as reject:
            self._dead_record(result, value, source, headers, reject.reason, reject.detail)
        except Exception as exc:  # the flow must never stop on one record
            self._dead_record(
                result, value, source, headers, "decode_error", f"{type(exc).__name__}: {exc}"
            )
        return result

    def _dead_record(self, result, value, source, headers, reason, detail) -> None:
        result.points.clear()
        result.dead_letters = [
            DeadLetter(reason, detail[:500], bytes(value or b""), source, headers)
        ]
        counters = result.counters
        counters.points = counters.normalized = 0
        counters.skipped_non_genai = counters.skipped_unsupported = 0
        counters.dead_lettered_points = 0
        counters.dead_lettered_records = 1

    def _decode(self, value, source, headers, result: MetricsDecodeResult) -> None:
        expected = record_encoding(value, headers, self.default_encoding, self.max_record_bytes)
        if expected == PROTO:
            self._decode_proto(value, source, headers, result)
        else:
            self._decode_json(value, source, headers, result)
        if result.counters.points == 0:
            raise Reject("empty_record", "record holds no metric data points")

    # --- shared point handling ------------------------------------------------

    def _metric(
        self, name: str, unit: str, family: str, form: str, temporality: Any,
        resource_attrs: Mapping[str, Any], resource_id: list, scope: tuple[str, str],
    ) -> _Metric:  # fmt: skip
        prefix = _canonical([resource_id, scope[0], scope[1], name, unit, form])
        return _Metric(
            name, unit, family, form, temporality, resource_attrs,
            prefix.encode("utf-8", "surrogatepass"),
        )  # fmt: skip

    @staticmethod
    def _supported(family: str, form: str | None, monotonic: bool) -> bool:
        if form in (HISTOGRAM, EXPONENTIAL):
            return True
        return form == SUM and monotonic and family in (TOKENS, COST)

    def _tenant(self, attrs: Mapping[str, Any], resource_attrs: Mapping[str, Any]) -> str:
        for key in self.tenant_keys:
            value = resource_attrs.get(key)
            if value is None or value == "":
                value = attrs.get(key)
            if value is not None and value != "":
                return checked_text(value, key, self.limits)
        return "default"

    def _check_time(self, start_ns: int, time_ns: int) -> None:
        if time_ns <= 0:
            raise Reject("invalid_timestamp", "point has no time (time_unix_nano is 0)")
        if start_ns < 0 or start_ns > time_ns:
            raise Reject("invalid_timestamp", f"start {start_ns} is after time {time_ns}")
        limits = self.limits
        if limits.max_past_skew_s or limits.max_future_skew_s:
            now = self._now()
            at = time_ns / 1e9
            if limits.max_past_skew_s and at < now - limits.max_past_skew_s:
                raise Reject("timestamp_skew", f"point is {now - at:.0f}s old")
            if limits.max_future_skew_s and at > now + limits.max_future_skew_s:
                raise Reject("timestamp_skew", f"point is {at - now:.0f}s in the future")

    def _intern(self, bounds: list[float]) -> tuple[float, ...]:
        key = tuple(bounds)
        found = self._bounds.get(key)
        if found is None:
            found = key
            if len(self._bounds) < 1024:
                self._bounds[key] = key
        return found

    def _point(self, m: _Metric, raw: _Raw) -> MetricPoint | None:
        """Validate and normalize one point; None when it is skipped as unsupported."""
        if raw.flags & _NO_RECORDED_VALUE:
            return None
        self._check_time(raw.start_ns, raw.time_ns)
        temporality = _TEMPORALITIES.get(m.temporality)
        if temporality is None:
            raise Reject("invalid_metric", f"aggregation temporality {m.temporality!r}")
        attrs = raw.attrs
        family = m.family
        if family == TOKENS:
            token_type = attrs.get(TOKEN_TYPE)
            if token_type is None or token_type == "":
                raise Reject("invalid_metric", f"{m.name} point has no {TOKEN_TYPE}")
            kind = TOKEN_TYPES.get(str(token_type).strip().lower())
            if kind is None:
                return None  # e.g. "total" or "cached": not a split we can add up
        else:
            kind = family
        scale = 1.0
        if kind in (DURATION, TTFT):
            scale = TIME_UNITS.get(m.unit.strip())
            if scale is None:
                raise Reject("unsupported_unit", f"{m.name} has unit {m.unit[:40]!r}")

        # --- values ---
        count, total = raw.count, raw.sum
        bounds, counts = raw.bounds, raw.bucket_counts
        for name, number in (("sum", total), ("min", raw.min), ("max", raw.max)):
            _non_negative(number, name)
        if raw.min is not None and raw.max is not None and raw.min > raw.max:
            raise Reject("invalid_metric", f"min {raw.min} > max {raw.max}")
        if m.form == SUM:
            if total is None:
                raise Reject("invalid_metric", "sum point has no value")
        else:
            if len(bounds) > MAX_BUCKETS:
                raise Reject("invalid_metric", f"{len(bounds)} bucket bounds (limit {MAX_BUCKETS})")
            for i, bound in enumerate(bounds):
                if not math.isfinite(bound) or (i and bound <= bounds[i - 1]):
                    raise Reject("invalid_metric", "bucket bounds are not finite and increasing")
            if counts:
                if len(counts) != len(bounds) + 1:
                    raise Reject(
                        "invalid_metric",
                        f"bucket count mismatch: {len(counts)} counts for {len(bounds)} bounds",
                    )
                if sum(counts) != count:
                    raise Reject(
                        "invalid_metric", f"bucket counts add up to {sum(counts)}, count is {count}"
                    )
            else:
                bounds = []
            if count == 0 and total:
                raise Reject("invalid_metric", f"count is 0 but sum is {total}")
            if total is None and count and kind in (TOKEN_INPUT, TOKEN_OUTPUT, COST):
                raise Reject("invalid_metric", f"{m.name} point has no sum")
            limit = (
                self.limits.max_cost_usd
                if kind == COST
                else self.limits.max_tokens
                if kind in (TOKEN_INPUT, TOKEN_OUTPUT)
                else None
            )
            if limit is not None:
                if raw.max is not None and raw.max > limit:
                    raise Reject("invalid_metric", f"max {raw.max} is above the limit {limit}")
                if total is not None and total > limit * max(count, 1):
                    raise Reject("invalid_metric", f"sum {total} is above {count} x {limit}")

        # --- dimensions ---
        limits = self.limits
        resource_attrs = m.resource_attrs
        provider = _first(attrs, dialects.PROVIDER)
        provider = (
            normalize_provider(checked_text(provider, "provider", limits)) if provider else ""
        )
        model = _first(attrs, dialects.RESPONSE_MODEL) or _first(attrs, dialects.REQUEST_MODEL)
        model = checked_text(model, "model", limits).strip()
        if not provider and model:
            price = self.prices.lookup(model, raw.time_ns / 1e9)
            if price is not None:
                provider = price.provider
        # The span mapping, so that both signals share keys (gen_ai.operation.name first).
        operation = dialects._operation(attrs) or ("chat" if model else "other")
        error_type = checked_text(_first(attrs, dialects.ERROR_TYPE), "error_type", limits)
        service = checked_text(resource_attrs.get("service.name") or "", "service", limits)

        digest = hashlib.blake2b(m.series_prefix, digest_size=16)
        digest.update(b"\x1f")
        digest.update(
            _canonical(sorted(attrs.items(), key=lambda kv: kv[0])).encode("utf-8", "surrogatepass")
        )

        if scale != 1.0:
            total = None if total is None else total * scale
            bounds = [b * scale for b in bounds]
            low = None if raw.min is None else raw.min * scale
            high = None if raw.max is None else raw.max * scale
        else:
            low, high = raw.min, raw.max
        exemplars: tuple[tuple[float, str], ...] = ()
        if kind == DURATION and raw.exemplars:
            exemplars = tuple(
                sorted(((v * scale, t) for v, t in raw.exemplars), reverse=True)[:_MAX_EXEMPLARS]
            )
        return MetricPoint(
            series_id=digest.hexdigest(),
            kind=kind,
            temporality=temporality,
            start_ns=raw.start_ns,
            time_ns=raw.time_ns,
            count=count if m.form != SUM else 0,
            sum=total,
            bounds=self._intern(bounds) if counts else (),
            bucket_counts=tuple(counts),
            min=low,
            max=high,
            tenant=self._tenant(attrs, resource_attrs),
            service=service,
            provider=provider,
            model=model,
            operation=operation,
            is_error=bool(error_type),
            error_type=error_type,
            metric=m.name,
            form=m.form,
            exemplars=exemplars,
        )

    def _accept(self, result: MetricsDecodeResult, point: MetricPoint | None) -> None:
        if point is None:
            result.counters.skipped_unsupported += 1
        else:
            result.counters.normalized += 1
            result.points.append(point)

    # --- otlp_proto -----------------------------------------------------------

    def _decode_proto(self, value, source, headers, result: MetricsDecodeResult) -> None:
        data = MetricsData()
        try:
            data.ParseFromString(value)
        except DecodeError as exc:
            raise Reject("invalid_protobuf", str(exc) or "protobuf parse failed") from None
        counters = result.counters
        for resource_metrics in data.resource_metrics:
            resource_attrs = {
                kv.key: _any_value(kv.value) for kv in resource_metrics.resource.attributes
            }
            resource_id = sorted(resource_attrs.items(), key=lambda kv: kv[0])
            for scope_metrics in resource_metrics.scope_metrics:
                scope = (scope_metrics.scope.name, scope_metrics.scope.version)
                for metric in scope_metrics.metrics:
                    form = metric.WhichOneof("data")
                    container = getattr(metric, form) if form else None
                    points = container.data_points if container is not None else ()
                    counters.points += len(points)
                    family = self.metrics.get(metric.name)
                    if family is None:
                        counters.skipped_non_genai += len(points)
                        continue
                    monotonic = form == SUM and container.is_monotonic
                    if not self._supported(family, form, monotonic):
                        counters.skipped_unsupported += len(points)
                        continue
                    m = self._metric(
                        metric.name, metric.unit, family, form,
                        container.aggregation_temporality, resource_attrs, resource_id, scope,
                    )  # fmt: skip
                    for point in points:
                        try:
                            found = self._point(m, self._proto_raw(form, point))
                        except Reject as reject:
                            self._dead_point_proto(
                                result, resource_metrics, scope_metrics, metric, form, point,
                                source, headers, reject,
                            )  # fmt: skip
                            continue
                        self._accept(result, found)

    @staticmethod
    def _proto_exemplars(point) -> list[tuple[float, str]]:
        out = []
        for exemplar in point.exemplars:
            kind = exemplar.WhichOneof("value")
            if kind is None or len(exemplar.trace_id) != 16:
                continue
            number = float(getattr(exemplar, kind))
            if math.isfinite(number):
                out.append((number, exemplar.trace_id.hex()))
        return out

    def _proto_raw(self, form: str, point) -> _Raw:
        raw = _Raw(
            attrs={kv.key: _any_value(kv.value) for kv in point.attributes},
            start_ns=point.start_time_unix_nano,
            time_ns=point.time_unix_nano,
            flags=point.flags,
        )
        if form == SUM:
            kind = point.WhichOneof("value")
            raw.sum = None if kind is None else float(getattr(point, kind))
            return raw
        raw.count = point.count
        raw.sum = point.sum if point.HasField("sum") else None
        raw.min = point.min if point.HasField("min") else None
        raw.max = point.max if point.HasField("max") else None
        raw.exemplars = self._proto_exemplars(point)
        if form == HISTOGRAM:
            raw.bounds = list(point.explicit_bounds)
            raw.bucket_counts = list(point.bucket_counts)
        else:
            if any(point.negative.bucket_counts):
                raise Reject("invalid_metric", "exponential histogram has negative values")
            raw.bounds, raw.bucket_counts = _exponential_buckets(
                point.scale, point.positive.offset, point.positive.bucket_counts, point.zero_count
            )
        return raw

    def _dead_point_proto(
        self, result, resource_metrics, scope_metrics, metric, form, point, source, headers, reject
    ):
        # A valid MetricsData holding just the offending point, for inspection or replay.
        one = MetricsData()
        rm = one.resource_metrics.add(resource=resource_metrics.resource)
        rm.schema_url = resource_metrics.schema_url
        sm = rm.scope_metrics.add(scope=scope_metrics.scope)
        sm.schema_url = scope_metrics.schema_url
        copy = sm.metrics.add(name=metric.name, description=metric.description, unit=metric.unit)
        source_container = getattr(metric, form)
        container = getattr(copy, form)
        container.aggregation_temporality = source_container.aggregation_temporality
        if form == SUM:
            container.is_monotonic = source_container.is_monotonic
        container.data_points.append(point)
        result.dead_letters.append(
            DeadLetter(reject.reason, reject.detail, one.SerializeToString(), source, headers)
        )
        result.counters.dead_lettered_points += 1

    # --- otlp_json ------------------------------------------------------------

    def _decode_json(self, value, source, headers, result: MetricsDecodeResult) -> None:
        try:
            data = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise Reject("invalid_json", str(exc)[:200]) from None
        if not isinstance(data, dict):
            raise Reject("invalid_json", "top level is not an object")
        resource_list = _get(data, "resourceMetrics", "resource_metrics")
        if resource_list is None:
            resource_list = []  # an empty request (as protobuf's JSON mapping allows)
        if not isinstance(resource_list, list):
            raise Reject("invalid_json", "resourceMetrics is not an array")
        counters = result.counters
        for resource_metrics in resource_list:
            if not isinstance(resource_metrics, dict):
                raise Reject("invalid_json", "resourceMetrics entry is not an object")
            resource = resource_metrics.get("resource") or {}
            if not isinstance(resource, dict):
                raise Reject("invalid_json", "resource is not an object")
            resource_attrs = self._json_attrs(resource.get("attributes"))
            resource_id = sorted(resource_attrs.items(), key=lambda kv: kv[0])
            scopes = _get(resource_metrics, "scopeMetrics", "scope_metrics") or []
            if not isinstance(scopes, list):
                raise Reject("invalid_json", "scopeMetrics is not an array")
            for scope_metrics in scopes:
                if not isinstance(scope_metrics, dict):
                    raise Reject("invalid_json", "scopeMetrics entry is not an object")
                scope = scope_metrics.get("scope") or {}
                if not isinstance(scope, dict):
                    raise Reject("invalid_json", "scope is not an object")
                scope_id = (str(scope.get("name") or ""), str(scope.get("version") or ""))
                metrics = scope_metrics.get("metrics") or []
                if not isinstance(metrics, list):
                    raise Reject("invalid_json", "metrics is not an array")
                for metric in metrics:
                    self._json_metric(
                        metric, resource_metrics, scope_metrics, resource_attrs, resource_id,
                        scope_id, source, headers, result, counters,
                    )  # fmt: skip

    def _json_metric(
        self, metric, resource_metrics, scope_metrics, resource_attrs, resource_id, scope_id,
        source, headers, result, counters,
    ) -> None:  # fmt: skip
        if not isinstance(metric, dict):
            raise Reject("invalid_json", "metrics entry is not an object")
        name = metric.get("name")
        unit = metric.get("unit") or ""
        if not isinstance(name, str) or not isinstance(unit, str):
            raise Reject("invalid_json", "metric name or unit is not a string")
        form = form_key = container = None
        for key, kind in _JSON_FORMS:
            if isinstance(metric.get(key), dict):
                form, form_key, container = kind, key, metric[key]
                break
        points = _get(container, "dataPoints", "data_points") if container is not None else None
        points = points or []
        if not isinstance(points, list):
            raise Reject("invalid_json", "dataPoints is not an array")
        counters.points += len(points)
        family = self.metrics.get(name)
        if family is None:
            counters.skipped_non_genai += len(points)
            return
        monotonic = form == SUM and _get(container, "isMonotonic", "is_monotonic") is True
        if not self._supported(family, form, monotonic):
            counters.skipped_unsupported += len(points)
            return
        temporality = _get(container, "aggregationTemporality", "aggregation_temporality")
        m = self._metric(
            name, unit, family, form, temporality, resource_attrs, resource_id, scope_id
        )
        for point in points:
            try:
                try:
                    raw = self._json_raw(form, point)
                except (
                    TypeError,
                    ValueError,
                    AttributeError,
                    OverflowError,
                    RecursionError,
                ) as exc:
                    raise Reject("invalid_metric", f"{type(exc).__name__}: {exc}"[:300]) from None
                found = self._point(m, raw)
            except Reject as reject:
                self._dead_point_json(
                    result, resource_metrics, scope_metrics, metric, form_key, point,
                    source, headers, reject,
                )  # fmt: skip
                continue
            self._accept(result, found)

    @staticmethod
    def _json_attrs(items: Any) -> dict[str, Any]:
        if not items:
            return {}
        if not isinstance(items, list):
            raise Reject("invalid_json", "attributes is not an array")
        attrs = {}
        for kv in items:
            if isinstance(kv, dict):
                key = kv.get("key")
                if isinstance(key, str):
                    attrs[key] = _json_any_value(kv.get("value"))
        return attrs

    @staticmethod
    def _json_exemplars(items: Any) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        if not isinstance(items, list):
            return out
        for exemplar in items:  # optional extras: a malformed one is ignored, not fatal
            if not isinstance(exemplar, dict):
                continue
            try:
                number = _double(_get(exemplar, "asDouble", "as_double"), "exemplar")
                if number is None:
                    number = float(_sint(_get(exemplar, "asInt", "as_int"), "exemplar"))
                trace_id = _json_id(_get(exemplar, "traceId", "trace_id"))
            except Reject:
                continue
            if len(trace_id) == 32 and math.isfinite(number):
                out.append((number, trace_id))
        return out

    def _json_raw(self, form: str, point: Any) -> _Raw:
        if not isinstance(point, dict):
            raise Reject("invalid_metric", "data point is not an object")
        attributes = point.get("attributes")
        if attributes is not None and not isinstance(attributes, list):
            raise Reject("invalid_metric", "attributes is not an array")
        raw = _Raw(
            attrs=self._json_attrs(attributes),
            start_ns=_json_int(_get(point, "startTimeUnixNano", "start_time_unix_nano"), "start"),
            time_ns=_json_int(_get(point, "timeUnixNano", "time_unix_nano"), "time"),
            flags=_uint(point.get("flags"), "flags"),
        )
        if form == SUM:
            number = _double(_get(point, "asDouble", "as_double"), "asDouble")
            if number is None and _get(point, "asInt", "as_int") is not None:
                number = float(_sint(_get(point, "asInt", "as_int"), "asInt"))
            raw.sum = number
            return raw
        raw.count = _uint(point.get("count"), "count")
        raw.sum = _double(point.get("sum"), "sum")
        raw.min = _double(point.get("min"), "min")
        raw.max = _double(point.get("max"), "max")
        raw.exemplars = self._json_exemplars(point.get("exemplars"))
        if form == HISTOGRAM:
            raw.bounds = _double_list(_get(point, "explicitBounds", "explicit_bounds"), "bounds")
            raw.bucket_counts = _uint_list(_get(point, "bucketCounts", "bucket_counts"), "buckets")
            return raw
        positive = point.get("positive") or {}
        negative = point.get("negative") or {}
        if not isinstance(positive, dict) or not isinstance(negative, dict):
            raise Reject("invalid_metric", "positive/negative buckets are not objects")
        if any(_uint_list(_get(negative, "bucketCounts", "bucket_counts"), "negative")):
            raise Reject("invalid_metric", "exponential histogram has negative values")
        raw.bounds, raw.bucket_counts = _exponential_buckets(
            _sint(point.get("scale"), "scale"),
            _sint(positive.get("offset"), "offset"),
            _uint_list(_get(positive, "bucketCounts", "bucket_counts"), "positive"),
            _uint(_get(point, "zeroCount", "zero_count"), "zeroCount"),
        )
        return raw

    def _dead_point_json(
        self, result, resource_metrics, scope_metrics, metric, form_key, point, source, headers,
        reject,
    ):  # fmt: skip
        form_keys = {key for key, _ in _JSON_FORMS}
        container = {
            k: v for k, v in metric[form_key].items() if k not in ("dataPoints", "data_points")
        }
        container["dataPoints"] = [point]
        copy = {k: v for k, v in metric.items() if k not in form_keys}
        copy[form_key] = container
        one = {
            "resourceMetrics": [
                {
                    "resource": resource_metrics.get("resource") or {},
                    "scopeMetrics": [
                        {"scope": scope_metrics.get("scope") or {}, "metrics": [copy]}
                    ],
                }
            ]
        }
        result.dead_letters.append(
            DeadLetter(
                reject.reason,
                reject.detail,
                json.dumps(one, separators=(",", ":")).encode(),
                source,
                headers,
            )
        )
        result.counters.dead_lettered_points += 1
