"""GenAI metrics from the real OpenTelemetry SDK, decoded and folded into window partials.

Metrics are recorded by the SDK's ``MeterProvider`` with an ``InMemoryMetricReader``
(DELTA or CUMULATIVE via ``preferred_temporality``), encoded by the OTLP exporter's
own ``encode_metrics`` into an ``ExportMetricsServiceRequest``: ``otlp_proto`` is its
``SerializeToString()``, ``otlp_json`` is ``MessageToDict`` (camelCase, int64 as
strings). The SDK's clock is replaced, so every timestamp and window is exact.

The helpers here are also used by ``test_metrics_delta.py``.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import opentelemetry.sdk.metrics._internal._view_instrument_match as _view_match
import opentelemetry.sdk.metrics._internal.instrument as _instrument
import opentelemetry.sdk.metrics._internal.metric_reader_storage as _reader_storage
import pytest
from google.protobuf.json_format import MessageToDict, ParseDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import MetricsData
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableGauge,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from otel_helpers import JSON, PRICES, PROTO, headers_for

from observatory.operators.metrics import (
    MetricsShard,
    decode_metrics_batch,
    points_to_partials,
    route_metrics_to_shards,
)
from observatory.operators.stats import StatsAcc, preaggregate
from observatory.operators.windows import CountersRow, ShardInput, WindowShard
from observatory.schemas.dialects import Limits
from observatory.schemas.otlp_metrics import (
    COST,
    DELTA,
    DURATION,
    TOKEN_INPUT,
    TOKEN_OUTPUT,
    TTFT,
    MetricPoint,
    MetricsDecoder,
    MetricsDecodeResult,
)
from observatory.schemas.records import KafkaRecord, LlmCall, RecordBatch, SourceRef

NS = 1_000_000_000
#: 2025-11-24T16:00:00Z, a multiple of 60 s and after every valid_from in prices.yaml.
START_NS = 1_764_000_000 * NS
WINDOW_NS = 60 * NS
SOURCE = SourceRef("otlp_metrics", 1, 77)
DELTA_T = AggregationTemporality.DELTA
CUMULATIVE_T = AggregationTemporality.CUMULATIVE
RESOURCE = {"service.name": "chat-api", "tenant.id": "acme", "service.instance.id": "pod-1"}

#: The boundaries the GenAI conventions advise (gen-ai-metrics.md, v1.41.0).
DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01 … 81.92 s
TOKEN_BUCKETS = [4**i for i in range(14)]  # 1, 4, 16 … 67108864

#: OpenTelemetry GenAI conventions, current names.
CURRENT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "server.address": "api.openai.com",
    "server.port": 443,
}
CURRENT_KEY = ("acme", "chat-api", "openai", "gpt-4o-2024-08-06", "chat", "")
#: The deprecated dialect (gen_ai.system, before v1.37), as OpenLLMetry/OpenLIT still emit.
DEPRECATED = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "anthropic",
    "gen_ai.request.model": "claude-3-5-sonnet-20241022",
}
DEPRECATED_KEY = ("acme", "chat-api", "anthropic", "claude-3-5-sonnet-20241022", "chat", "")

_SDK_CLOCK_MODULES = (_instrument, _reader_storage, _view_match)


class Clock:
    """The SDK's ``time_ns``, under the test's control."""

    def __init__(self) -> None:
        self.ns = START_NS

    def __call__(self) -> int:
        return self.ns

    def at(self, seconds: float) -> None:
        self.ns = START_NS + round(seconds * NS)


def install_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    for module in _SDK_CLOCK_MODULES:
        monkeypatch.setattr(module, "time_ns", clock)
    return clock


def sampled_context(trace_id: int):
    """A context with a sampled span, so the SDK's default exemplar filter keeps exemplars."""
    span = NonRecordingSpan(
        SpanContext(trace_id, 0x1122334455667788, False, TraceFlags(TraceFlags.SAMPLED))
    )
    return trace.set_span_in_context(span)


class GenAiApp:
    """One process instrumented the way GenAI instrumentations do (one MeterProvider)."""

    def __init__(
        self,
        temporality: AggregationTemporality = DELTA_T,
        resource: Mapping[str, Any] = RESOURCE,
        *,
        exponential: bool = False,
        scope: str = "opentelemetry.instrumentation.openai_v2",
    ):
        kinds = (Histogram, Counter, UpDownCounter, ObservableGauge)
        self.reader = InMemoryMetricReader(preferred_temporality=dict.fromkeys(kinds, temporality))
        views = (
            [View(instrument_type=Histogram, aggregation=ExponentialBucketHistogramAggregation())]
            if exponential
            else []
        )
        self.provider = MeterProvider(
            metric_readers=[self.reader], resource=Resource(dict(resource)), views=views
        )
        self.meter = meter = self.provider.get_meter(scope, "1.0.0")
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.ttft = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.server_ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token",
            unit="s",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.cost = meter.create_histogram("gen_ai.usage.cost", unit="USD")
        self.http = meter.create_histogram("http.client.request.duration", unit="s")

    def call(
        self,
        attrs: Mapping[str, Any] = CURRENT,
        *,
        seconds: float,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        ttft: float | None = None,
        cost: float | None = None,
        error: str | None = None,
        context=None,
    ) -> None:
        attrs = dict(attrs)
        self.duration.record(
            seconds, {**attrs, "error.type": error} if error else attrs, context=context
        )
        if input_tokens is not None:
            self.tokens.record(input_tokens, {**attrs, "gen_ai.token.type": "input"})
        if output_tokens is not None:
            self.tokens.record(output_tokens, {**attrs, "gen_ai.token.type": "output"})
        if ttft is not None:
            self.ttft.record(ttft, attrs)
        if cost is not None:
            self.cost.record(cost, attrs)

    def request(self) -> ExportMetricsServiceRequest:
        data = self.reader.get_metrics_data()
        assert data is not None
        return encode_metrics(data)

    def record(self, encoding: str, **options: bool) -> bytes:
        return encode(self.request(), encoding, **options)


def to_json(
    request, *, enums_as_ints: bool = False, snake: bool = False, hex_ids: bool = True
) -> dict:
    """OTLP/JSON of a request; exemplar ids hex as the OTLP spec says (MessageToDict: base64)."""
    data = MessageToDict(
        request, use_integers_for_enums=enums_as_ints, preserving_proto_field_name=snake
    )
    if hex_ids:
        for rm in data.get("resourceMetrics", data.get("resource_metrics", [])):
            for sm in rm.get("scopeMetrics", rm.get("scope_metrics", [])):
                for metric in sm.get("metrics", []):
                    for form in metric.values():
                        if not isinstance(form, dict):
                            continue
                        for point in form.get("dataPoints", form.get("data_points", [])):
                            for exemplar in point.get("exemplars", []):
                                for key in ("traceId", "spanId", "trace_id", "span_id"):
                                    if key in exemplar:
                                        exemplar[key] = base64.b64decode(exemplar[key]).hex()
    return data


def encode(request, encoding: str, **options: bool) -> bytes:
    if encoding == PROTO:
        return request.SerializeToString()
    if encoding == JSON:
        return json.dumps(to_json(request, **options), separators=(",", ":")).encode()
    raise ValueError(encoding)


def from_dict(data: dict, encoding: str) -> bytes:
    """Bytes of a (possibly mutated) OTLP/JSON dict in either encoding."""
    if encoding == JSON:
        return json.dumps(data).encode()
    for rm in data.get("resourceMetrics", []):  # back to protobuf JSON's base64 ids
        for sm in rm.get("scopeMetrics", []):
            for metric in sm.get("metrics", []):
                for form in metric.values():
                    if isinstance(form, dict):
                        for point in form.get("dataPoints", []):
                            for exemplar in point.get("exemplars", []):
                                for key in ("traceId", "spanId"):
                                    if key in exemplar:
                                        raw = bytes.fromhex(exemplar[key])
                                        exemplar[key] = base64.b64encode(raw).decode()
    return ParseDict(data, MetricsData()).SerializeToString()


DECODER = MetricsDecoder(prices=PRICES)


def decode(
    value: bytes | None, encoding: str, decoder: MetricsDecoder | None = None
) -> MetricsDecodeResult:
    return (decoder or DECODER).decode(value, SOURCE, headers_for(encoding))


def decode_ok(value: bytes, encoding: str, decoder: MetricsDecoder | None = None):
    result = decode(value, encoding, decoder)
    assert result.dead_letters == [], [(d.reason, d.detail) for d in result.dead_letters]
    return result


def by_kind(points: list[MetricPoint]) -> dict[str, list[MetricPoint]]:
    out: dict[str, list[MetricPoint]] = {}
    for point in points:
        out.setdefault(point.kind, []).append(point)
    return out


def one_partial(partials: dict, key=CURRENT_KEY, start_ns: int = START_NS) -> StatsAcc:
    return partials[(key, start_ns)]


def price_cost(model: str, at_ns: int, input_tokens: int, output_tokens: int) -> float:
    price = PRICES.lookup(model, at_ns / 1e9)
    return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


# --- the SDK end to end --------------------------------------------------------------------------


def test_delta_calls_tokens_cost_and_window(monkeypatch, encoding):
    clock = install_clock(monkeypatch)
    app = GenAiApp(DELTA_T)
    clock.at(5)
    app.call(seconds=0.5, input_tokens=1200, output_tokens=300)
    clock.at(12)
    app.call(seconds=1.7, input_tokens=800, output_tokens=45)
    clock.at(20)
    app.call(seconds=0.05, input_tokens=10, error="rate_limited")
    clock.at(30)
    result = decode_ok(app.record(encoding), encoding)

    c = result.counters
    assert (c.records, c.points, c.normalized, c.skipped_non_genai) == (1, 4, 4, 0)
    kinds = by_kind(result.points)
    assert sorted(kinds) == [DURATION, TOKEN_INPUT, TOKEN_OUTPUT]
    durations = kinds[DURATION]
    assert sorted((p.count, p.is_error, p.error_type) for p in durations) == [
        (1, True, "rate_limited"),
        (2, False, ""),
    ]
    for point in result.points:
        assert point.temporality == DELTA
        assert point.key == CURRENT_KEY
        assert point.time_ns == START_NS + 30 * NS
        assert point.start_ns == START_NS + (20 if point.is_error else 5) * NS
        assert point.metric in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage")
    ok = next(p for p in durations if not p.is_error)
    assert ok.sum == pytest.approx(2200.0)  # ms
    assert ok.bounds == tuple(pytest.approx(b * 1000) for b in DURATION_BUCKETS)
    assert (ok.min, ok.max) == (pytest.approx(500.0), pytest.approx(1700.0))
    assert kinds[TOKEN_INPUT][0].sum == 2010
    assert kinds[TOKEN_OUTPUT][0].sum == 345

    partials = points_to_partials(result.points, WINDOW_NS, PRICES)
    assert list(partials) == [(CURRENT_KEY, START_NS)]
    acc = one_partial(partials)
    assert (acc.calls, acc.errors, acc.input_tokens, acc.output_tokens) == (3, 1, 2010, 345)
    assert acc.cost_usd == pytest.approx(
        price_cost("gpt-4o-2024-08-06", START_NS, 2010, 345), rel=1e-12
    )
    assert acc.unpriced_calls == 0
    assert (acc.cached_input_tokens, acc.reasoning_tokens) == (0, 0)
    assert acc.latency.count == 3
    assert acc.latency_max_ms == pytest.approx(1700.0)
    assert acc.ttft is None


def test_deprecated_dialect_and_provider_spellings(monkeypatch, encoding):
    clock = install_clock(monkeypatch)
    app = GenAiApp(DELTA_T)
    app.call(DEPRECATED, seconds=2.0, input_tokens=1000, output_tokens=100)
    app.call({**DEPRECATED, "gen_ai.system": "xai", "gen_ai.request.model": "grok-x"}, seconds=1)
    app.call({**DEPRECATED, "gen_ai.system": "az.ai.openai"}, seconds=1)
    # No provider at all: the price table names it, as for spans.
    app.call(
        {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "gpt-4o-mini"}, seconds=1
    )
    clock.at(59)
    result = decode_ok(app.record(encoding), encoding)
    keys = {p.key for p in result.points}
    assert keys == {
        DEPRECATED_KEY,
        ("acme", "chat-api", "x_ai", "grok-x", "chat", ""),
        ("acme", "chat-api", "azure.ai.openai", "claude-3-5-sonnet-20241022", "chat", ""),
        ("acme", "chat-api", "openai", "gpt-4o-mini", "embeddings", ""),
    }
    partials = points_to_partials(result.points, WINDOW_NS, PRICES)
    acc = one_partial(partials, DEPRECATED_KEY)
    assert (acc.calls, acc.input_tokens, acc.output_tokens) == (1, 1000, 100)
    assert acc.cost_usd == pytest.approx(1000 * 3.0 / 1e6 + 100 * 15.0 / 1e6, rel=1e-12)
    unpriced = one_partial(partials, ("acme", "chat-api", "x_ai", "grok-x", "chat", ""))
    assert (unpriced.calls, unpriced.unpriced_calls, unpriced.cost_usd) == (1, 1, 0.0)


def test_operations_map_like_spans(monkeypatch):
    install_clock(monkeypatch)
    app = GenAiApp(DELTA_T)
    for name in (
        "chat",
        "generate_content",
        "text_completion",
        "embeddings",
        "execute_tool",
        "invoke_agent",
        "retrieval",
        "create_agent",
    ):
        app.call({**CURRENT, "gen_ai.operation.name": name}, seconds=1)
    app.call({"gen_ai.provider.name": "openai"}, seconds=1)  # no model, no operation
    result = decode_ok(app.record(PROTO), PROTO)
    assert sorted({p.operation for p in result.points}) == [
        "chat",
        "embeddings",
        "execute_tool",
        "invoke_agent",
        "other",
        "retrieval",
        "text_completion",
    ]


@pytest.mark.parametrize(
    ("options"),
    [
        {},
        {"enums_as_ints": True},
        {"snake": True},
        {"hex_ids": False},  # protobuf's own JSON printer: base64 exemplar ids
    ],
)
def test_json_variants_equal_proto(monkeypatch, options):
    clock = install_clock(monkeypatch)
    app = GenAiApp(CUMULATIVE_T)
    trace_id = 0xABCDEF0123456789ABCDEF0123456789
    app.call(seconds=0.3, input_tokens=5, output_tokens=7, ttft=0.1, cost=0.002)
    app.call(DEPRECATED, seconds=4.0, input_tokens=50, context=sampled_context(trace_id))
    clock.at(10)
    request = app.request()
    proto = decode_ok(encode(request, PROTO), PROTO)
    as_json = decode_ok(encode(request, JSON, **options), JSON)
    assert proto.points == as_json.points
    assert len(proto.points) == 7
    exemplars = [p.exemplars for p in proto.points if p.exemplars]
    assert exemplars == [((4000.0, format(trace_id, "032x")),)]


def test_series_ids(monkeypatch):
    clock = install_clock(monkeypatch)
    app = GenAiApp(CUMULATIVE_T)
    other_pod = GenAiApp(CUMULATIVE_T, {**RESOURCE, "service.instance.id": "pod-2"})
    for a in (app, other_pod):
        a.call(seconds=1, input_tokens=1)
        a.call({**CURRENT, "server.port": 8443}, seconds=1)
    clock.at(10)
    first = decode_ok(app.record(PROTO), PROTO).points
    pod2 = decode_ok(other_pod.record(PROTO), PROTO).points
    app.call(seconds=2, input_tokens=2)
    clock.at(20)
    second = decode_ok(app.record(JSON), JSON).points
    ids = [p.series_id for p in first]
    # One id per stream; stable across collections and encodings.
    assert len(set(ids)) == len(ids) == 3
    assert [p.series_id for p in second] == ids
    # Same attributes on another process: another series (full resource identity),
    # but the same stats key, so it lands on the same shard and window.
    assert not set(ids) & {p.series_id for p in pod2}
    assert {p.key for p in pod2} == {p.key for p in first} == {CURRENT_KEY}
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_cumulative_sdk_collections_give_interval_deltas(monkeypatch, encoding):
    from observatory.operators.metrics import CumulativeToDelta

    clock = install_clock(monkeypatch)
    app = GenAiApp(CUMULATIVE_T)
    deltas = CumulativeToDelta()
    per_window: dict[int, StatsAcc] = {}
    recorded = [  # (at s, duration s, input, output); a collection at the end of each minute
        [(3, 0.4, 100, 10), (40, 1.9, 200, 20)],
        [(70, 1.5, 300, 30)],
        [],  # a quiet minute: the cumulative point repeats, no delta
        [(190, 0.2, 400, 40), (191, 0.3, 500, 50), (192, 12.0, 600, 60)],
    ]
    for minute, calls in enumerate(recorded):
        for at, seconds, i, o in calls:
            clock.at(at)
            app.call(seconds=seconds, input_tokens=i, output_tokens=o)
        clock.at(60 * minute + 59)
        points = decode_ok(app.record(encoding), encoding).points
        assert {p.temporality for p in points} == {"cumulative"}
        found = [d for d in map(deltas.delta, points) if d is not None]
        for window_key, acc in points_to_partials(found, WINDOW_NS, PRICES).items():
            per_window.setdefault(window_key[1], StatsAcc()).merge(acc)
    assert sorted(per_window) == [START_NS, START_NS + 60 * NS, START_NS + 180 * NS]
    for minute, calls in enumerate(recorded):
        if not calls:
            continue
        acc = per_window[START_NS + 60 * minute * NS]
        inputs, outputs = sum(c[2] for c in calls), sum(c[3] for c in calls)
        assert (acc.calls, acc.input_tokens, acc.output_tokens) == (len(calls), inputs, outputs)
        assert acc.cost_usd == pytest.approx(
            price_cost("gpt-4o-2024-08-06", START_NS, inputs, outputs), rel=1e-9
        )
        assert acc.latency.count == len(calls)
    # The cumulative max moved to 12 s in the last minute: the delta knows it exactly.
    assert per_window[START_NS + 180 * NS].latency_max_ms == pytest.approx(12_000.0)
    # In the second minute the cumulative max (1.9 s) did not move: 1.5 s is known only
    # by its bucket (1.28, 2.56].
    assert per_window[START_NS + 60 * NS].latency_max_ms == pytest.approx(2560.0)
    c = deltas.counters
    assert (c.first_kept, c.first_dropped, c.resets) == (3, 0, 0)
    assert c.unchanged == 3  # the quiet minute's three series


def test_points_fall_in_the_window_of_their_time(monkeypatch):
    clock = install_clock(monkeypatch)
    app = GenAiApp(DELTA_T)
    per_window = {}
    for at, n in ((10, 1), (59.999, 2), (60, 3), (185, 4)):
        for _ in range(n):
            app.call(seconds=1, input_tokens=1)
        clock.at(at)
        points = decode_ok(app.record(PROTO), PROTO).points
        for (key, start), acc in points_to_partials(points, WINDOW_NS, PRICES).items():
            assert key == CURRENT_KEY
            per_window.setdefault(start, StatsAcc()).merge(acc)
    assert {start - START_NS: acc.calls for start, acc in per_window.items()} == {
        0: 3,
        60 * NS: 3,
        180 * NS: 4,
    }


def test_reported_cost_wins_over_computed(monkeypatch, encoding):
    clock = install_clock(monkeypatch)
    app = GenAiApp(DELTA_T, scope="openlit")
    app.call(seconds=1, input_tokens=1000, output_tokens=1000, cost=0.25)
    app.call(seconds=1, input_tokens=1000, output_tokens=1000, cost=0.5)
    unknown = {**CURRENT, "gen_ai.response.model": "in-house-llm"}
    app.call(unknown, seconds=1, input_tokens=10, cost=0.125)
    clock.at(30)
    result = decode_ok(app.record(encoding), encoding)
    assert len(by_kind(result.points)[COST]) == 2
    partials = points_to_partials(result.points, WINDOW_NS, PRICES)
    acc = one_partial(partials)
    assert acc.cost_usd == pytest.approx(0.75)
    other = one_partial(partials, (*CURRENT_KEY[:3], "in-house-llm", "chat", ""))
    # A model without a price but with a reported cost is priced.
    assert (other.calls, other.cost_usd, other.unpriced_calls) == (1, 0.125, 0)


def test_ttft_histograms(monkeypatch, encoding):
    clock = install_clock(monkeypatch)
    app = GenAiApp(DELTA_T)
    values = [0.11, 0.13, 0.25, 0.3, 0.31, 0.7]
    for v in values:
        app.call(seconds=2, ttft=v)
    app.server_ttft.record(0.05, CURRENT)
    clock.at(30)
    result = decode_ok(app.record(encoding), encoding)
    ttft = by_kind(result.points)[TTFT]
    assert sorted(p.metric for p in ttft) == [
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.server.time_to_first_token",
    ]
    acc = one_partial(points_to_partials(result.points, WINDOW_NS, PRICES))
    assert acc.calls == 6 and acc.ttft.count == 7
    # Bucket resolution: the conventions' x2 buckets keep any quantile within 1/3.
    truth = sorted([*values, 0.05])
    for q in (0.5, 0.95):
        exact = truth[math.floor(q * (len(truth) - 1))] * 1000
        assert abs(acc.ttft.quantile(q) - exact) <= exact / 3 + exact * 0.01


def test_latency_representatives(monkeypatch):
    clock = install_clock(monkeypatch)
    rng = random.Random(7)
    app = GenAiApp(DELTA_T)
    values = [rng.lognormvariate(0, 1) for _ in range(2000)]
    for v in values:
        app.call(seconds=v)
    clock.at(30)
    points = decode_ok(app.record(PROTO), PROTO).points
    acc = one_partial(points_to_partials(points, WINDOW_NS, PRICES))
    truth = sorted(v * 1000 for v in values)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = truth[math.floor(q * (len(truth) - 1))]
        # x2 buckets: at most (hi - lo) / (hi + lo) = 1/3 off, plus the sketch's 0.5%.
        assert abs(acc.latency.quantile(q) - exact) <= exact * (1 / 3 + 0.01)
    assert acc.latency_max_ms == pytest.approx(max(truth))


def test_sdk_default_buckets_single_bucket_uses_the_mean(monkeypatch):
    clock = install_clock(monkeypatch)
    app = GenAiApp(DELTA_T)
    # An instrumentation without advisory buckets: the SDK's 0, 5, 10, 25 … *seconds*.
    coarse = app.meter.create_histogram("gen_ai.client.operation.duration", unit="ms")
    for v in (1.2, 1.4):
        coarse.record(v * 1000, CURRENT)  # 1200 and 1400 ms: both in (1000, 2500]
    clock.at(30)
    (point,) = decode_ok(app.record(PROTO), PROTO).points
    assert point.bounds[:3] == (0.0, 5.0, 10.0) and point.sum == pytest.approx(2600.0)  # ms unit
    acc = one_partial(points_to_partials([point], WINDOW_NS, PRICES))
    assert acc.latency.quantile(0.5) == pytest.approx(1300.0, rel=0.01)
    assert acc.latency_max_ms == 1400.0


def test_exponential_histograms(monkeypatch, encoding):
    clock = install_clock(monkeypatch)
    app = GenAiApp(DELTA_T, exponential=True)
    values = [0.2, 0.21, 0.5, 3.0, 40.0]
    for v in values:
        app.call(seconds=v, input_tokens=0 if v > 1 else 1000, output_tokens=100)
    clock.at(30)
    result = decode_ok(app.record(encoding), encoding)
    kinds = by_kind(result.points)
    duration = kinds[DURATION][0]
    assert duration.form == "exponential_histogram"
    assert (duration.count, sum(duration.bucket_counts)) == (5, 5)
    assert kinds[TOKEN_INPUT][0].bucket_counts[0] == 2  # two zeros: the zero bucket
    acc = one_partial(points_to_partials(result.points, WINDOW_NS, PRICES))
    assert (acc.calls, acc.input_tokens, acc.output_tokens) == (5, 3000, 500)
    assert acc.latency_max_ms == pytest.approx(40_000.0)
    exact = sorted(values)[2] * 1000
    assert abs(acc.latency.quantile(0.5) - exact) <= exact * 0.05  # fine buckets


def test_forms_other_than_histograms(monkeypatch, encoding):
    clock = install_clock(monkeypatch)
    app = GenAiApp(DELTA_T)
    meter = app.meter
    # Token usage / cost as Counters (monotonic Sums): kept, tokens and cost only.
    counter = meter.create_counter("gen_ai.client.token.usage", unit="{token}")
    counter.add(70, {**DEPRECATED, "gen_ai.token.type": "input"})
    counter.add(30, {**DEPRECATED, "gen_ai.token.type": "output"})
    meter.create_counter("gen_ai.usage.cost", unit="USD").add(0.5, DEPRECATED)
    # Not additive, or not a distribution: skipped.
    meter.create_up_down_counter("gen_ai.client.token.usage").add(
        5, {**CURRENT, "gen_ai.token.type": "input"}
    )
    meter.create_gauge("gen_ai.usage.cost").set(3.0, CURRENT)
    meter.create_counter("gen_ai.client.operation.duration", unit="s").add(1.0, CURRENT)
    # Not a GenAI metric at all.
    app.http.record(0.2, {"http.request.method": "GET"})
    app.http.record(0.2, {"http.request.method": "POST"})
    # A token type that is not input/output.
    app.tokens.record(100, {**CURRENT, "gen_ai.token.type": "total"})
    clock.at(30)
    result = decode_ok(app.record(encoding), encoding)
    c = result.counters
    assert (c.points, c.normalized, c.skipped_non_genai, c.skipped_unsupported) == (9, 3, 2, 4)
    assert {(p.kind, p.form, p.count, p.sum) for p in result.points} == {
        (TOKEN_INPUT, "sum", 0, 70.0),
        (TOKEN_OUTPUT, "sum", 0, 30.0),
        (COST, "sum", 0, 0.5),
    }
    acc = one_partial(points_to_partials(result.points, WINDOW_NS, PRICES), DEPRECATED_KEY)
    assert (acc.calls, acc.input_tokens, acc.output_tokens, acc.cost_usd) == (0, 70, 30, 0.5)


def test_units_of_time_metrics(monkeypatch):
    clock = install_clock(monkeypatch)
    app = GenAiApp(DELTA_T)
    app.meter.create_histogram("gen_ai.server.time_to_first_token", unit="ms").record(250, CURRENT)
    app.meter.create_histogram("gen_ai.client.operation.time_to_first_chunk", unit="us").record(
        250_000, CURRENT
    )
    app.meter.create_histogram("gen_ai.client.operation.duration", unit="").record(0.25, CURRENT)
    clock.at(30)
    points = decode_ok(app.record(PROTO), PROTO).points
    assert sorted(p.sum for p in points) == pytest.approx([250.0] * 3)


def test_tenant_resolution(monkeypatch):
    clock = install_clock(monkeypatch)
    no_tenant = {"service.name": "svc"}
    app = GenAiApp(DELTA_T, no_tenant)
    app.call(seconds=1)
    app.call({**CURRENT, "tenant.id": "from-point"}, seconds=1)
    app.call({**CURRENT, "org": "org-7"}, seconds=1)
    clock.at(30)
    value = app.record(PROTO)
    assert sorted(p.tenant for p in decode_ok(value, PROTO).points) == [
        "default",
        "default",
        "from-point",
    ]
    custom = MetricsDecoder(prices=PRICES, tenant_keys=("org", "tenant.id"))
    assert sorted(p.tenant for p in decode_ok(value, PROTO, custom).points) == [
        "default",
        "from-point",
        "org-7",
    ]
    resource_wins = GenAiApp(DELTA_T, RESOURCE)
    resource_wins.call({**CURRENT, "tenant.id": "from-point"}, seconds=1)
    clock.at(40)
    assert [p.tenant for p in decode_ok(resource_wins.record(PROTO), PROTO).points] == ["acme"]


def test_metrics_table_is_configurable(monkeypatch):
    clock = install_clock(monkeypatch)
    app = GenAiApp(DELTA_T)
    app.meter.create_histogram("gen_ai.server.request.duration", unit="s").record(1.0, CURRENT)
    app.call(seconds=1)
    clock.at(30)
    value = app.record(PROTO)
    default = decode_ok(value, PROTO)
    assert (default.counters.normalized, default.counters.skipped_non_genai) == (1, 1)
    server = MetricsDecoder(prices=PRICES, metrics={"gen_ai.server.request.duration": "duration"})
    result = decode_ok(value, PROTO, server)
    assert [p.metric for p in result.points] == ["gen_ai.server.request.duration"]
    with pytest.raises(ValueError, match="family"):
        MetricsDecoder(metrics={"x": "latency"})
    with pytest.raises(ValueError, match="encoding"):
        MetricsDecoder(default_encoding="avro")


# --- the dataflow glue ---------------------------------------------------------------------------


def _batch(values: list[bytes], part: int = 0, encoding: str = PROTO) -> RecordBatch:
    records = [
        KafkaRecord("otlp_metrics", part, offset, None, value, headers_for(encoding), 0)
        for offset, value in enumerate(values)
    ]
    return RecordBatch(f"otlp_metrics-{part}", records, caught_up=False)


def test_decode_route_and_shard_feed_the_window_shards(monkeypatch):
    clock = install_clock(monkeypatch)
    app = GenAiApp(CUMULATIVE_T)
    app.call(seconds=1, input_tokens=100, output_tokens=10)
    app.call(DEPRECATED, seconds=2, input_tokens=7)
    clock.at(30)
    first = app.record(PROTO)
    app.call(seconds=1, input_tokens=100, output_tokens=10)
    clock.at(90)
    second = app.record(PROTO)
    decoded = decode_metrics_batch(DECODER, _batch([first, b"\x00garbage", second]))
    assert decoded.max_event_ns == START_NS + 90 * NS
    assert [d.reason for d in decoded.dead_letters] == ["invalid_protobuf"]
    assert (decoded.counters.records, decoded.counters.normalized) == (3, 10)

    shards = 4
    routed = list(route_metrics_to_shards(decoded, shards))
    assert [name for name, _ in routed] == [f"shard-{i:04d}" for i in range(shards)]
    assert [item.counters is not None for _, item in routed] == [True, False, False, False]
    owners = {p.key: name for name, item in routed for p in item.points}
    from observatory.operators.ingest import shard_name, shard_of

    for key, name in owners.items():  # the shard that owns the key's span windows
        assert name == shard_name(shard_of(key, shards))

    outputs = {}
    for name, item in routed:
        shard = MetricsShard(window_s=60, prices=PRICES, name=name, clock=lambda: 100.0)
        outputs[name] = shard.on_batch([item])
        # Snapshots restore the state.
        again = MetricsShard(window_s=60, prices=PRICES, resume=shard.snapshot())
        assert len(again.state.deltas) == len(shard.state.deltas)
    inputs = [o for out in outputs.values() for o in out if isinstance(o, ShardInput)]
    counters = [o for out in outputs.values() for o in out if isinstance(o, CountersRow)]
    assert len(inputs) == shards and all(i.partition == "otlp_metrics-0" for i in inputs)
    values = dict(next(c for c in counters if c.shard == "shard-0000").values)
    assert values["metric_points_normalized"] == 10
    assert values["metric_records_dead_lettered"] == 1

    # Merged into the window shard of the key, next to the span partials of that key.
    owner = owners[CURRENT_KEY]
    window = WindowShard(
        window_s=60,
        watermark_delay_s=0,
        allowed_lateness_s=0,
        partitions=["otlp_spans-0", "otlp_metrics-0"],
        hourly=False,
        clock=lambda: 100.0,
    )
    span = LlmCall(
        end_ns=START_NS + 70 * NS,
        model="gpt-4o-2024-08-06",
        provider="openai",
        tenant="acme",
        service="chat-api",
        operation="chat",
        duration_ms=800.0,
    )
    spans = preaggregate([span], WINDOW_NS)
    rows = window.on_batch(
        [
            ShardInput("otlp_spans-0", span.end_ns, False, list(spans.items())),
            *(o for o in outputs[owner] if isinstance(o, ShardInput)),
        ]
    )
    rows += window.on_batch([ShardInput("otlp_spans-0", START_NS + 200 * NS, False)])
    rows += window.on_batch([ShardInput("otlp_metrics-0", START_NS + 200 * NS, False)])
    stats = {(r.bucket.timestamp(), r.model): r for r in rows if hasattr(r, "calls")}
    minute0 = stats[(START_NS // NS, "gpt-4o-2024-08-06")]
    minute1 = stats[(START_NS // NS + 60, "gpt-4o-2024-08-06")]
    # Minute 0: the first cumulative point, taken from its start. Minute 1: the
    # difference, plus the span of that minute (same key, same window).
    assert (minute0.calls, minute0.input_tokens) == (1, 100)
    assert (minute1.calls, minute1.input_tokens, minute1.latency_max_ms) == (2, 100, 1280.0)


# --- bad input -----------------------------------------------------------------------------------


def _good_dict(monkeypatch) -> dict:
    """A request with two duration series and two token series, as OTLP/JSON."""
    clock = install_clock(monkeypatch)
    app = GenAiApp(DELTA_T)
    app.call(seconds=0.5, input_tokens=10)
    app.call(DEPRECATED, seconds=1.0, input_tokens=20)
    clock.at(30)
    return to_json(app.request())


def _duration_points(data: dict) -> list[dict]:
    for metric in data["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]:
        if metric["name"] == "gen_ai.client.operation.duration":
            return metric["histogram"]["dataPoints"]
    raise AssertionError("no duration metric")


def _token_points(data: dict) -> list[dict]:
    for metric in data["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]:
        if metric["name"] == "gen_ai.client.token.usage":
            return metric["histogram"]["dataPoints"]
    raise AssertionError("no token metric")


def _set_attr(point: dict, key: str, value: str) -> None:
    point["attributes"] = [kv for kv in point["attributes"] if kv["key"] != key]
    point["attributes"].append({"key": key, "value": {"stringValue": value}})


def _metric_of(data: dict, name: str) -> dict:
    return next(
        m for m in data["resourceMetrics"][0]["scopeMetrics"][0]["metrics"] if m["name"] == name
    )


POINT_REJECTS: list[tuple[str, str, Callable[[dict], None], bool]] = [
    # (id, reason, mutate the dict, also possible in protobuf)
    ("nan_sum", "invalid_metric", lambda d: _duration_points(d)[1].update(sum="NaN"), True),
    ("inf_sum", "invalid_metric", lambda d: _duration_points(d)[1].update(sum="Infinity"), True),
    ("negative_sum", "invalid_metric", lambda d: _duration_points(d)[1].update(sum=-1.0), True),
    ("negative_min", "invalid_metric", lambda d: _duration_points(d)[1].update(min=-1.0), True),
    ("min_above_max", "invalid_metric", lambda d: _duration_points(d)[1].update(min=9.0), True),
    (
        "bucket_count_mismatch",
        "invalid_metric",
        lambda d: _duration_points(d)[1]["bucketCounts"].append("0"),
        True,
    ),
    (
        "bucket_sum_mismatch",
        "invalid_metric",
        lambda d: _duration_points(d)[1].update(count="5"),
        True,
    ),
    (
        "bounds_not_increasing",
        "invalid_metric",
        lambda d: _duration_points(d)[1]["explicitBounds"].reverse(),
        True,
    ),
    (
        "count_zero_sum_set",
        "invalid_metric",
        lambda d: _duration_points(d)[1].update(count="0", bucketCounts=[]),
        True,
    ),
    (
        "token_sum_missing",
        "invalid_metric",
        lambda d: _token_points(d)[1].pop("sum"),
        True,
    ),
    (
        "tokens_over_limit",
        "invalid_metric",
        lambda d: _token_points(d)[1].update(sum=6e7, max=6e7),
        True,
    ),
    (
        "token_type_missing",
        "invalid_metric",
        lambda d: _token_points(d)[1].update(
            attributes=[
                kv for kv in _token_points(d)[1]["attributes"] if kv["key"] != "gen_ai.token.type"
            ]
        ),
        True,
    ),
    ("time_zero", "invalid_timestamp", lambda d: _duration_points(d)[1].pop("timeUnixNano"), True),
    (
        "start_after_time",
        "invalid_timestamp",
        lambda d: _duration_points(d)[1].update(startTimeUnixNano=str(START_NS + 99 * NS)),
        True,
    ),
    (
        "oversized_model",
        "oversized_attribute",
        lambda d: _set_attr(_duration_points(d)[1], "gen_ai.request.model", "m" * 20_000),
        True,
    ),
    # Dimensions must fit TimescaleDB: no NUL, at most max_dimension_bytes (256).
    (
        "model_5kb",
        "oversized_dimension",
        lambda d: _set_attr(_duration_points(d)[1], "gen_ai.request.model", "m" * 5_000),
        True,
    ),
    (
        "model_nul",
        "invalid_text",
        lambda d: _set_attr(_duration_points(d)[1], "gen_ai.request.model", "gpt\x00-4o"),
        True,
    ),
    (
        "provider_nul",
        "invalid_text",
        lambda d: _set_attr(_token_points(d)[1], "gen_ai.provider.name", "\x00"),
        True,
    ),
    (
        "error_type_long",
        "oversized_dimension",
        lambda d: _set_attr(_duration_points(d)[1], "error.type", "E" * 257),
        True,
    ),
    # OTLP/JSON only: values protobuf cannot hold.
    (
        "model_lone_surrogate",
        "invalid_text",
        lambda d: _set_attr(_duration_points(d)[1], "gen_ai.request.model", "gpt\ud800"),
        False,
    ),
    (
        "negative_count",
        "invalid_metric",
        lambda d: _duration_points(d)[1].update(count="-2"),
        False,
    ),
    ("count_text", "invalid_metric", lambda d: _duration_points(d)[1].update(count="two"), False),
    ("count_bool", "invalid_metric", lambda d: _duration_points(d)[1].update(count=True), False),
    (
        "bucket_text",
        "invalid_metric",
        lambda d: _duration_points(d)[1]["bucketCounts"].__setitem__(0, "x"),
        False,
    ),
    ("point_not_object", "invalid_metric", lambda d: _duration_points(d).__setitem__(1, 7), False),
    (
        "attributes_not_array",
        "invalid_metric",
        lambda d: _duration_points(d)[1].update(attributes={"a": 1}),
        False,
    ),
    ("sum_text", "invalid_metric", lambda d: _duration_points(d)[1].update(sum="lots"), False),
    (
        "time_text",
        "invalid_timestamp",
        lambda d: _duration_points(d)[1].update(timeUnixNano="soon"),
        False,
    ),
]


@pytest.mark.parametrize(
    ("encoding", "reason", "mutate"),
    [
        pytest.param(encoding, r, m, id=f"{i}-{encoding}")
        for i, r, m, in_proto in POINT_REJECTS
        for encoding in ((PROTO, JSON) if in_proto else (JSON,))
    ],
)
def test_a_bad_point_is_dead_lettered_alone(monkeypatch, encoding, reason, mutate):
    data = _good_dict(monkeypatch)
    mutate(data)
    value = from_dict(copy.deepcopy(data), encoding)
    result = decode(value, encoding)
    assert [(d.reason, d.source) for d in result.dead_letters] == [(reason, SOURCE)], [
        d.detail for d in result.dead_letters
    ]
    dead = result.dead_letters[0]
    assert dead.detail and dead.headers == headers_for(encoding)
    c = result.counters
    assert (c.points, c.normalized, c.dead_lettered_points, c.dead_lettered_records) == (4, 3, 1, 0)
    assert len(result.points) == 3
    # The dead letter is a valid one-point record of the same encoding, failing the same way.
    again = decode(dead.value, encoding)
    assert [d.reason for d in again.dead_letters] == [reason]
    assert (again.counters.points, again.counters.dead_lettered_points) == (1, 1)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("service.name", "chat\x00api", "invalid_text"),
        ("service.name", "s" * 257, "oversized_dimension"),
        ("tenant.id", "\x00", "invalid_text"),
        ("tenant.id", "t" * 5_000, "oversized_dimension"),
    ],
)
def test_resource_dimensions_must_fit_the_database(monkeypatch, encoding, key, value, reason):
    data = _good_dict(monkeypatch)
    _set_attr(data["resourceMetrics"][0]["resource"], key, value)
    result = decode(from_dict(data, encoding), encoding)
    assert [d.reason for d in result.dead_letters] == [reason] * 4
    assert result.points == []


@pytest.mark.parametrize(
    ("temporality"), [0, "AGGREGATION_TEMPORALITY_UNSPECIFIED", 9, "sideways", None]
)
def test_unknown_temporality(monkeypatch, temporality):
    data = _good_dict(monkeypatch)
    metric = _metric_of(data, "gen_ai.client.operation.duration")
    metric["histogram"]["aggregationTemporality"] = temporality
    if temporality is None:
        del metric["histogram"]["aggregationTemporality"]
    result = decode(json.dumps(data).encode(), JSON)
    assert [d.reason for d in result.dead_letters] == ["invalid_metric"] * 2
    if isinstance(temporality, int):
        proto = decode(from_dict(data, PROTO), PROTO)
        assert [d.reason for d in proto.dead_letters] == ["invalid_metric"] * 2


def test_unsupported_unit_and_negative_exponential(monkeypatch, encoding):
    data = _good_dict(monkeypatch)
    _metric_of(data, "gen_ai.client.operation.duration")["unit"] = "min"
    result = decode(from_dict(data, encoding), encoding)
    assert [d.reason for d in result.dead_letters] == ["unsupported_unit"] * 2
    exp = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "gen_ai.client.operation.duration",
                                "unit": "s",
                                "exponentialHistogram": {
                                    "aggregationTemporality": 1,
                                    "dataPoints": [
                                        {
                                            "timeUnixNano": str(START_NS),
                                            "count": "2",
                                            "sum": 1.0,
                                            "scale": 3,
                                            "positive": {"offset": -2, "bucketCounts": ["1"]},
                                            "negative": {"offset": 0, "bucketCounts": ["1"]},
                                        },
                                        {
                                            "timeUnixNano": str(START_NS),
                                            "count": "1",
                                            "sum": 1.0,
                                            "scale": 99,
                                            "positive": {"offset": 0, "bucketCounts": ["1"]},
                                        },
                                        {
                                            "timeUnixNano": str(START_NS),
                                            "count": "1",
                                            "sum": 1.0,
                                            "scale": 0,
                                            "positive": {"offset": 5000, "bucketCounts": ["1"]},
                                        },
                                        {
                                            "timeUnixNano": str(START_NS),
                                            "count": "1",
                                            "sum": 0.5,
                                            "scale": 0,
                                            "positive": {"offset": -1, "bucketCounts": ["1"]},
                                        },
                                    ],
                                },
                            }
                        ]
                    }
                ]
            }
        ]
    }
    result = decode(from_dict(exp, encoding), encoding)
    assert [d.reason for d in result.dead_letters] == ["invalid_metric"] * 3
    (point,) = result.points
    assert point.bounds == (500.0, 1000.0) and point.bucket_counts == (0, 1, 0)


def test_timestamp_skew(monkeypatch, encoding):
    data = _good_dict(monkeypatch)
    decoder = MetricsDecoder(
        prices=PRICES,
        limits=Limits(max_past_skew_s=60, max_future_skew_s=60),
        now=lambda: START_NS / NS + 3600,
    )
    result = decode(from_dict(data, encoding), encoding, decoder)
    assert {d.reason for d in result.dead_letters} == {"timestamp_skew"}
    assert result.counters.dead_lettered_points == 4


def test_no_recorded_value_points_are_skipped(monkeypatch, encoding):
    data = _good_dict(monkeypatch)
    _duration_points(data)[0]["flags"] = 1
    result = decode(from_dict(data, encoding), encoding)
    assert (result.counters.normalized, result.counters.skipped_unsupported) == (3, 1)


def _assert_record_dead(result: MetricsDecodeResult, value, reason: str, headers=()) -> None:
    assert result.points == []
    assert [(d.reason, d.value, d.headers) for d in result.dead_letters] == [
        (reason, value or b"", list(headers))
    ], [d.detail for d in result.dead_letters]
    c = result.counters
    assert (c.records, c.dead_lettered_records, c.points, c.normalized) == (1, 1, 0, 0)


def test_record_level_rejects(monkeypatch):
    data = _good_dict(monkeypatch)
    good_proto = from_dict(copy.deepcopy(data), PROTO)
    good_json = json.dumps(data).encode()
    json_header = [("content-type", b"application/json")]
    proto_header = [("content-type", b"application/x-protobuf")]
    cases = [
        (None, [], "empty_record"),
        (b"", [], "empty_record"),
        (MetricsData().SerializeToString() or b"\n\x00", [], "empty_record"),
        (b'{"resourceMetrics": []}', [], "empty_record"),
        (good_proto[:-3], [], "invalid_protobuf"),
        (b"\xff\xff\xff\xff", [], "invalid_protobuf"),
        (good_json[:-5], [], "invalid_json"),
        (b"[1, 2]", json_header, "invalid_json"),
        (b"[1, 2]", [], "invalid_protobuf"),  # sniffed: does not start with "{"
        (b'{"resourceMetrics": {}}', [], "invalid_json"),
        (b'{"resourceMetrics": [7]}', [], "invalid_json"),
        (b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [1]}]}]}', [], "invalid_json"),
        (good_proto, json_header, "wrong_encoding"),
        (good_json, proto_header, "wrong_encoding"),
    ]
    for value, headers, reason in cases:
        result = DECODER.decode(value, SOURCE, headers)
        _assert_record_dead(result, value, reason, headers)
    small = MetricsDecoder(prices=PRICES, max_record_bytes=100)
    _assert_record_dead(small.decode(good_proto, SOURCE), good_proto, "oversized_record")
    # The topic's configured encoding applies when no header names one.
    as_json = MetricsDecoder(prices=PRICES, default_encoding=JSON)
    _assert_record_dead(as_json.decode(good_proto, SOURCE), good_proto, "wrong_encoding")
    assert MetricsDecoder(prices=PRICES, default_encoding=PROTO).decode(good_proto, SOURCE).points


def test_an_internal_error_is_a_dead_letter(monkeypatch):
    data = _good_dict(monkeypatch)
    value = from_dict(data, PROTO)
    decoder = MetricsDecoder(prices=PRICES)

    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(decoder, "_point", boom)
    _assert_record_dead(decoder.decode(value, SOURCE), value, "decode_error")


# --- never raises --------------------------------------------------------------------------------


def _check_invariants(result: MetricsDecodeResult) -> None:
    c = result.counters
    assert c.records == 1
    if c.dead_lettered_records:
        assert result.points == [] and len(result.dead_letters) == 1
    else:
        assert c.points == (
            c.normalized + c.skipped_non_genai + c.skipped_unsupported + c.dead_lettered_points
        )
        assert len(result.points) == c.normalized
        assert len(result.dead_letters) == c.dead_lettered_points
    for point in result.points:
        assert point.count >= 0 and (point.sum is None or point.sum >= 0)
        assert point.time_ns > 0


_SEED_REQUEST: list[bytes] = []


def _seed(encoding: str) -> bytes:
    """A good request with every kind, made once (hypothesis reruns the test body)."""
    if not _SEED_REQUEST:
        with pytest.MonkeyPatch.context() as mp:
            clock = install_clock(mp)
            app = GenAiApp(CUMULATIVE_T)
            app.call(seconds=0.4, input_tokens=3, output_tokens=4, ttft=0.1, cost=0.01)
            app.call(DEPRECATED, seconds=9, error="timeout")
            app.http.record(1.0)
            clock.at(30)
            request = app.request()
        _SEED_REQUEST.extend([encode(request, PROTO), encode(request, JSON)])
    return _SEED_REQUEST[0 if encoding == PROTO else 1]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=600), st.sampled_from([None, PROTO, JSON]))
def test_random_bytes_never_raise(value, declared):
    headers = headers_for(declared) if declared else []
    _check_invariants(DECODER.decode(value, SOURCE, headers))


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from([PROTO, JSON]),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 10**6),
)
def test_mutated_records_never_raise(encoding, flips, cut):
    value = bytearray(_seed(encoding))
    for position, byte in flips:
        value[position % len(value)] = byte
    value = bytes(value[: max(1, len(value) - cut % 40)])
    _check_invariants(DECODER.decode(value, SOURCE, headers_for(encoding)))


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.sampled_from(["NaN", "-1", "1e400", "AGGREGATION_TEMPORALITY_DELTA", "0x10"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_json_with_random_values_in_valid_places_never_raises(data):
    request = json.loads(_seed(JSON))
    # Replace one value anywhere in the tree by a random JSON value.
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, child in node.items():
                paths.append((*path, key))
                walk(child, (*path, key))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                paths.append((*path, index))
                walk(child, (*path, index))

    walk(request, ())
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        node = request
        try:
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = data.draw(_JSON_VALUES)
        except (KeyError, IndexError, TypeError):
            continue
    value = json.dumps(request).encode()
    _check_invariants(DECODER.decode(value, SOURCE, headers_for(JSON)))
