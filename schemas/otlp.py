"""Decode the OpenTelemetry Collector's Kafka trace records into :class:`LlmCall`.

One Kafka record holds one serialized ``TracesData``/``ExportTraceServiceRequest``
(``otlp_proto``; both are ``repeated ResourceSpans resource_spans = 1`` on the
wire) or its OTLP/JSON form (``otlp_json``: camelCase keys, hex ids, int64 as
strings). A record may hold 1..N resources, scopes and spans; a trace may be
spread over many records.

:meth:`TraceDecoder.decode` never raises: every record comes back as calls,
skipped non-GenAI spans and dead letters with a reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, TracesData

from observatory.schemas import dialects
from observatory.schemas.dialects import Limits, Reject
from observatory.schemas.pricing import PriceTable
from observatory.schemas.records import DeadLetter, DecodeCounters, LlmCall, SourceRef

PROTO = "otlp_proto"
JSON = "otlp_json"
AUTO = "auto"
ENCODINGS = (PROTO, JSON, AUTO)

#: Record headers that may name the encoding of one record.
_ENCODING_HEADERS = ("otlp.encoding", "encoding", "content-type", "content_type")
_HEADER_VALUES = {
    "otlp_proto": PROTO,
    "application/x-protobuf": PROTO,
    "application/protobuf": PROTO,
    "otlp_json": JSON,
    "application/json": JSON,
}
_STATUS_ERROR = 2


@dataclass(slots=True)
class DecodeResult:
    calls: list[LlmCall] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    counters: DecodeCounters = field(default_factory=DecodeCounters)


def header_encoding(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The encoding a record's headers declare, if any."""
    for key, value in headers or ():
        if key.lower() in _ENCODING_HEADERS and value is not None:
            text = value.decode("utf-8", "replace").split(";")[0].strip().lower()
            if text in _HEADER_VALUES:
                return _HEADER_VALUES[text]
    return None


def sniff_encoding(value: bytes) -> str:
    """Tell OTLP/JSON from protobuf by the first bytes.

    A protobuf ``TracesData`` starts with 0x0A (field 1, length-delimited) and
    never with ``{``. JSON starts with ``{``, possibly after white space — but
    0x0A is also a newline, and a protobuf whose first entry is 123 bytes long
    starts with ``\n{``. Only that ambiguous prefix is settled by trying JSON.
    """
    if value[:1] == b"{":
        return JSON
    stripped = value.lstrip(b" \t\r\n")
    if stripped[:1] != b"{":
        return PROTO
    if value[:2] != b"\n{":
        return JSON
    try:
        json.loads(value)
    except (ValueError, RecursionError):
        return PROTO
    return JSON


def record_encoding(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    default_encoding: str,
    max_record_bytes: int,
) -> str:
    """The encoding to decode a record with, or :class:`Reject` with the reason.

    A header wins over the topic's configured encoding, which wins over
    sniffing; bytes that contradict the declared encoding are rejected.
    """
    if not value:
        raise Reject("empty_record", "record has no value")
    if len(value) > max_record_bytes:
        raise Reject("oversized_record", f"record is {len(value)} bytes")
    declared = header_encoding(headers)
    sniffed = sniff_encoding(value)
    expected = declared or (default_encoding if default_encoding != AUTO else sniffed)
    if expected == JSON and sniffed == PROTO and _parses_as_json(value):
        raise Reject("invalid_json", "top level is not an object")
    if expected != sniffed:
        raise Reject(
            "wrong_encoding",
            f"expected {expected} ({'header' if declared else 'topic config'}) "
            f"but the bytes look like {sniffed}",
        )
    return expected


def _parses_as_json(value: bytes) -> bool:
    try:
        json.loads(value)
    except (ValueError, RecursionError):
        return False
    return True


def _any_value(value: AnyValue, depth: int = 0) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value" and depth < 8:
        return [_any_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value" and depth < 8:
        return {kv.key: _any_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return None


def _json_any_value(value: Any, depth: int = 0) -> Any:
    if not isinstance(value, Mapping) or depth > 8:
        return None
    for key, item in value.items():
        if key in ("stringValue", "string_value"):
            return item if isinstance(item, str) else str(item)
        if key in ("intValue", "int_value"):
            try:
                return int(item)
            except (TypeError, ValueError):
                return item  # the normalizer rejects what it needs and cannot read
        if key in ("doubleValue", "double_value"):
            try:
                return float(item)
            except (TypeError, ValueError):
                return item
        if key in ("boolValue", "bool_value"):
            return bool(item)
        if key in ("arrayValue", "array_value") and isinstance(item, Mapping):
            values = item.get("values") or []
            return (
                [_json_any_value(v, depth + 1) for v in values]
                if isinstance(values, list)
                else None
            )
        if key in ("kvlistValue", "kvlist_value") and isinstance(item, Mapping):
            values = item.get("values") or []
            if not isinstance(values, list):
                return None
            return {
                kv["key"]: _json_any_value(kv.get("value"), depth + 1)
                for kv in values
                if isinstance(kv, Mapping) and isinstance(kv.get("key"), str)
            }
        if key in ("bytesValue", "bytes_value"):
            return item
    return None


def _json_id(value: Any) -> str:
    """OTLP/JSON ids are hex strings; accept any case, reject anything else."""
    if not value:
        return ""
    if not isinstance(value, str):
        raise Reject("invalid_span", "trace/span id is not a string")
    text = value.lower()
    try:
        bytes.fromhex(text)
        return text
    except ValueError:
        pass
    # The spec says hex, but protobuf's own JSON printer writes base64; accept it.
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) in (8, 16):
        return raw.hex()
    raise Reject("invalid_span", f"id {value[:40]!r} is neither hex nor base64")


def _json_int(value: Any, name: str) -> int:
    if value is None or value == "":
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise Reject("invalid_timestamp", f"{name}={str(value)[:40]!r} is not an integer") from None
    return number


class TraceDecoder:
    """Turn one Kafka record into normalized, priced :class:`LlmCall` values.

    >>> from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
    >>> data = TracesData()
    >>> rs = data.resource_spans.add()
    >>> kv = rs.resource.attributes.add(); kv.key = "service.name"; kv.value.string_value = "api"
    >>> span = rs.scope_spans.add().spans.add()
    >>> span.trace_id, span.span_id = b"\\x01" * 16, b"\\x02" * 8
    >>> span.start_time_unix_nano = 1_750_000_000 * 10**9
    >>> span.end_time_unix_nano = 1_750_000_001 * 10**9
    >>> kv = span.attributes.add(); kv.key = "gen_ai.request.model"
    >>> kv.value.string_value = "gpt-4o"
    >>> kv = span.attributes.add(); kv.key = "gen_ai.usage.input_tokens"; kv.value.int_value = 1000
    >>> result = TraceDecoder().decode(data.SerializeToString(), SourceRef("otlp_spans", 0, 0))
    >>> call = result.calls[0]
    >>> (call.service, call.model, call.provider, call.input_tokens, round(call.cost_usd, 6))
    ('api', 'gpt-4o', 'openai', 1000, 0.0025)
    """

    def __init__(
        self,
        *,
        tenant_keys: Sequence[str] = ("tenant.id",),
        limits: Limits | None = None,
        prices: PriceTable | None = None,
        default_encoding: str = AUTO,
        max_record_bytes: int = 64 * 1024 * 1024,
        now: Any = time.time,
    ):
        if default_encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, not {default_encoding!r}")
        self.tenant_keys = tuple(tenant_keys)
        self.limits = limits or Limits()
        self.prices = prices if prices is not None else PriceTable.bundled()
        self.default_encoding = default_encoding
        self.max_record_bytes = max_record_bytes
        self._now = now
        self._resource_keys = frozenset((*self.tenant_keys, "service.name", *dialects.ENVIRONMENT))
        self._span_keys = dialects.SPAN_KEYS | frozenset(self.tenant_keys)

    # --- entry point ----------------------------------------------------------

    def decode(
        self,
        value: bytes | None,
        source: SourceRef,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> DecodeResult:
        result = DecodeResult()
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
        # A record that fails as a whole replaces anything decoded from it so far.
        result.calls.clear()
        result.dead_letters = [
            DeadLetter(reason, detail[:500], bytes(value or b""), source, headers)
        ]
        counters = result.counters
        # Its spans are not counted: they are inside the dead-lettered record.
        counters.spans = counters.normalized = counters.skipped_non_genai = 0
        counters.dead_lettered_spans = 0
        counters.dead_lettered_records = 1

    def _decode(self, value, source, headers, result: DecodeResult) -> None:
        expected = record_encoding(value, headers, self.default_encoding, self.max_record_bytes)
        if expected == PROTO:
            self._decode_proto(value, source, headers, result)
        else:
            self._decode_json(value, source, headers, result)
        if result.counters.spans == 0:
            raise Reject("empty_record", "record holds no spans")

    # --- shared span handling -------------------------------------------------

    def _tenant(self, span_attrs: Mapping[str, Any], resource_attrs: Mapping[str, Any]) -> str:
        for key in self.tenant_keys:
            value = resource_attrs.get(key)
            if value is None or value == "":
                value = span_attrs.get(key)
            if value is not None and value != "":
                return dialects.checked_text(value, key, self.limits)
        return "default"

    def _check_times(self, start_ns: int, end_ns: int) -> None:
        if end_ns <= 0:
            raise Reject("invalid_timestamp", "span has no end time")
        if start_ns > end_ns:
            raise Reject("invalid_timestamp", "span ends before it starts")
        limits = self.limits
        if limits.max_past_skew_s or limits.max_future_skew_s:
            now = self._now()
            end_s = end_ns / 1e9
            if limits.max_past_skew_s and end_s < now - limits.max_past_skew_s:
                raise Reject("timestamp_skew", f"span ended {now - end_s:.0f}s ago")
            if limits.max_future_skew_s and end_s > now + limits.max_future_skew_s:
                raise Reject("timestamp_skew", f"span ends {end_s - now:.0f}s in the future")

    def _make_call(
        self,
        attrs: dict[str, Any],
        resource_attrs: Mapping[str, Any],
        *,
        start_ns: int,
        end_ns: int,
        trace_id: str,
        span_id: str,
        parent_span_id: str,
        status_error: bool,
    ) -> LlmCall | None:
        if not dialects.is_genai(attrs):
            return None
        self._check_times(start_ns, end_ns)
        dialects.check_trace_id(trace_id, self.limits)
        service = resource_attrs.get("service.name") or ""
        environment = ""
        for key in dialects.ENVIRONMENT:
            if resource_attrs.get(key):
                environment = str(resource_attrs[key])
                break
        call = dialects.build_call(
            attrs,
            end_ns=end_ns,
            start_ns=start_ns,
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent_span_id,
            status_error=status_error,
            tenant=self._tenant(attrs, resource_attrs),
            service=dialects.checked_text(service, "service", self.limits),
            environment=dialects.checked_text(environment, "environment", self.limits),
            limits=self.limits,
        )
        self.prices.apply(call)
        return call

    # --- otlp_proto -----------------------------------------------------------

    def _decode_proto(self, value, source, headers, result: DecodeResult) -> None:
        data = TracesData()
        try:
            data.ParseFromString(value)
        except DecodeError as exc:
            raise Reject("invalid_protobuf", str(exc) or "protobuf parse failed") from None
        counters = result.counters
        span_keys = self._span_keys
        resource_keys = self._resource_keys
        for resource_spans in data.resource_spans:
            resource_attrs = {
                kv.key: _any_value(kv.value)
                for kv in resource_spans.resource.attributes
                if kv.key in resource_keys
            }
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    counters.spans += 1
                    attrs = {
                        kv.key: _any_value(kv.value)
                        for kv in span.attributes
                        if kv.key in span_keys
                    }
                    try:
                        call = self._make_call(
                            attrs,
                            resource_attrs,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            status_error=span.status.code == _STATUS_ERROR,
                        )
                    except Reject as reject:
                        self._dead_span_proto(
                            result, resource_spans, scope_spans, span, source, headers, reject
                        )
                        continue
                    if call is None:
                        counters.skipped_non_genai += 1
                    else:
                        counters.normalized += 1
                        result.calls.append(call)

    def _dead_span_proto(self, result, resource_spans, scope_spans, span, source, headers, reject):
        # The dead letter is a valid TracesData holding just the offending span,
        # so it can be inspected or replayed with the same tools.
        one = TracesData()
        rs = one.resource_spans.add(resource=resource_spans.resource)
        rs.schema_url = resource_spans.schema_url
        ss: ScopeSpans = rs.scope_spans.add(scope=scope_spans.scope)
        ss.spans.append(span)
        result.dead_letters.append(
            DeadLetter(reject.reason, reject.detail, one.SerializeToString(), source, headers)
        )
        result.counters.dead_lettered_spans += 1

    # --- otlp_json ------------------------------------------------------------

    def _decode_json(self, value, source, headers, result: DecodeResult) -> None:
        try:
            data = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise Reject("invalid_json", str(exc)[:200]) from None
        if not isinstance(data, dict):
            raise Reject("invalid_json", "top level is not an object")
        resource_list = data.get("resourceSpans", data.get("resource_spans"))
        if resource_list is None:
            resource_list = []  # an empty request (as protobuf's JSON mapping allows)
        if not isinstance(resource_list, list):
            raise Reject("invalid_json", "resourceSpans is not an array")
        counters = result.counters
        for resource_spans in resource_list:
            if not isinstance(resource_spans, dict):
                raise Reject("invalid_json", "resourceSpans entry is not an object")
            resource = resource_spans.get("resource") or {}
            resource_attrs = self._json_attrs(resource.get("attributes"), self._resource_keys)
            scopes = resource_spans.get("scopeSpans", resource_spans.get("scope_spans")) or []
            if not isinstance(scopes, list):
                raise Reject("invalid_json", "scopeSpans is not an array")
            for scope_spans in scopes:
                spans = (scope_spans.get("spans") or []) if isinstance(scope_spans, dict) else None
                if not isinstance(spans, list):
                    raise Reject("invalid_json", "spans is not an array")
                for span in spans:
                    counters.spans += 1
                    try:
                        call = self._json_span(span, resource_attrs)
                    except (TypeError, ValueError, AttributeError, RecursionError) as exc:
                        # Malformed structure inside one span costs that span only.
                        reject = Reject("invalid_span", f"{type(exc).__name__}: {exc}"[:300])
                        self._dead_span_json(
                            result, resource_spans, scope_spans, span, source, headers, reject
                        )
                        continue
                    except Reject as reject:
                        self._dead_span_json(
                            result, resource_spans, scope_spans, span, source, headers, reject
                        )
                        continue
                    if call is None:
                        counters.skipped_non_genai += 1
                    else:
                        counters.normalized += 1
                        result.calls.append(call)

    @staticmethod
    def _json_attrs(items: Any, keep: frozenset[str]) -> dict[str, Any]:
        if not items:
            return {}
        if not isinstance(items, list):
            raise Reject("invalid_json", "attributes is not an array")
        attrs = {}
        for kv in items:
            if isinstance(kv, dict):
                key = kv.get("key")
                if isinstance(key, str) and key in keep:
                    attrs[key] = _json_any_value(kv.get("value"))
        return attrs

    def _json_span(self, span: Any, resource_attrs: Mapping[str, Any]) -> LlmCall | None:
        if not isinstance(span, dict):
            raise Reject("invalid_span", "span is not an object")
        attrs = self._json_attrs(span.get("attributes"), self._span_keys)
        status = span.get("status") or {}
        code = status.get("code") if isinstance(status, dict) else None
        return self._make_call(
            attrs,
            resource_attrs,
            start_ns=_json_int(span.get("startTimeUnixNano"), "startTimeUnixNano"),
            end_ns=_json_int(span.get("endTimeUnixNano"), "endTimeUnixNano"),
            trace_id=_json_id(span.get("traceId")),
            span_id=_json_id(span.get("spanId")),
            parent_span_id=_json_id(span.get("parentSpanId")),
            status_error=code in (2, "2", "STATUS_CODE_ERROR"),
        )

    def _dead_span_json(self, result, resource_spans, scope_spans, span, source, headers, reject):
        one = {
            "resourceSpans": [
                {
                    "resource": resource_spans.get("resource") or {},
                    "scopeSpans": [
                        {
                            "scope": scope_spans.get("scope") or {},
                            "spans": [span],
                        }
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
        result.counters.dead_lettered_spans += 1
