"""Real OpenTelemetry SDK spans, encoded the way the Collector's Kafka exporter does.

Spans are made by the SDK's ``TracerProvider`` (with a ``Resource``), collected
by an ``InMemorySpanExporter`` and encoded by the OTLP exporter's own
``encode_spans``: ``otlp_proto`` is ``SerializeToString()`` of that request,
``otlp_json`` is :func:`observatory.flows.simulate.to_otlp_json` of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from observatory.flows.simulate import to_otlp_json
from observatory.schemas.otlp import DecodeResult, TraceDecoder
from observatory.schemas.pricing import PriceTable
from observatory.schemas.records import LlmCall, SourceRef

NS = 1_000_000_000
#: 2025-11-24T16:00:00Z: after every ``valid_from`` in prices.yaml.
START_S = 1_764_000_000
START_NS = START_S * NS
END_NS = START_NS + 1_500_000_000  # 1.5 s later
END_S = END_NS / NS

#: A remote parent with fixed ids, so trace and parent ids are known exactly.
#: The hex digits include a-f so "lowercase hex" is actually checked.
PARENT_TRACE_ID = 0xABCDEF0123456789ABCDEF0123456789
PARENT_SPAN_ID = 0xFEDCBA9876543210
TRACE_HEX = "abcdef0123456789abcdef0123456789"
PARENT_HEX = "fedcba9876543210"

SOURCE = SourceRef("otlp_spans", 3, 4242)
PROTO = "otlp_proto"
JSON = "otlp_json"
ENCODINGS = (PROTO, JSON)
RESOURCE = {"service.name": "chat-api", "tenant.id": "acme"}


#: Loading prices.yaml takes ~20 ms; one shared (read-only) table keeps the suite fast.
PRICES = PriceTable.bundled()


def make_decoder(**kwargs: Any) -> TraceDecoder:
    """A :class:`TraceDecoder` with the bundled prices unless ``prices=`` is given."""
    kwargs.setdefault("prices", PRICES)
    return TraceDecoder(**kwargs)


_DEFAULT_DECODER = make_decoder()


@dataclass
class SpanSpec:
    """One span to make: its attributes, times, status and parent."""

    attributes: Mapping[str, Any] = field(default_factory=dict)
    name: str = "chat gpt-4o"
    start_ns: int = START_NS
    end_ns: int = END_NS
    status: StatusCode | None = None
    status_description: str | None = None
    child: bool = True  #: child of the fixed remote parent; False makes a root span


def make_spans(
    *specs: SpanSpec | Mapping[str, Any],
    resource: Mapping[str, Any] = RESOURCE,
    scope_name: str = "tests.otel_helpers",
) -> list[ReadableSpan]:
    """Finished SDK spans, in the order given. A bare mapping is a span's attributes."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource(dict(resource)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(scope_name, "1.0.0")
    parent = trace.set_span_in_context(
        NonRecordingSpan(
            SpanContext(
                PARENT_TRACE_ID,
                PARENT_SPAN_ID,
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
        )
    )
    for spec in specs:
        if not isinstance(spec, SpanSpec):
            spec = SpanSpec(attributes=spec)
        span = tracer.start_span(
            spec.name,
            context=parent if spec.child else trace.set_span_in_context(trace.INVALID_SPAN),
            kind=SpanKind.CLIENT,
            attributes=dict(spec.attributes),
            start_time=spec.start_ns,
        )
        if spec.status is not None:
            description = spec.status_description if spec.status == StatusCode.ERROR else None
            span.set_status(Status(spec.status, description))
        span.end(end_time=spec.end_ns)
    provider.shutdown()
    spans = list(exporter.get_finished_spans())
    assert len(spans) == len(specs)
    return spans


def encode(spans: Sequence[ReadableSpan], encoding: str) -> bytes:
    request = encode_spans(spans)
    if encoding == PROTO:
        return request.SerializeToString()
    if encoding == JSON:
        return to_otlp_json(request)
    raise ValueError(encoding)


def headers_for(encoding: str) -> list[tuple[str, bytes]]:
    """The headers the simulator (and the Collector) put on a record."""
    return [("content-type", b"application/json")] if encoding == JSON else []


def decode(
    value: bytes | None,
    decoder: TraceDecoder | None = None,
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> DecodeResult:
    return (decoder or _DEFAULT_DECODER).decode(value, SOURCE, headers)


def record(
    *specs: SpanSpec | Mapping[str, Any],
    encoding: str,
    resource: Mapping[str, Any] = RESOURCE,
) -> tuple[bytes, list[ReadableSpan]]:
    spans = make_spans(*specs, resource=resource)
    return encode(spans, encoding), spans


def one_call(
    spec: SpanSpec | Mapping[str, Any],
    encoding: str,
    *,
    resource: Mapping[str, Any] = RESOURCE,
    decoder: TraceDecoder | None = None,
) -> tuple[LlmCall, ReadableSpan]:
    """Decode a one-span record that must give exactly one call."""
    value, spans = record(spec, encoding=encoding, resource=resource)
    result = decode(value, decoder, headers_for(encoding))
    assert result.dead_letters == [], [(d.reason, d.detail) for d in result.dead_letters]
    assert len(result.calls) == 1
    assert result.counters.normalized == 1
    return result.calls[0], spans[0]


def span_hex(span: ReadableSpan) -> str:
    return format(span.context.span_id, "016x")


def trace_hex(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")
