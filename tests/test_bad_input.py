"""Bad input never stops the decoder: every record comes back as calls, skips or dead letters.

Record-level rejects carry the original bytes; span-level rejects keep the other
spans of the record and carry a valid one-span record of the same encoding.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from otel_helpers import (
    END_NS,
    END_S,
    JSON,
    NS,
    PROTO,
    RESOURCE,
    SOURCE,
    START_NS,
    SpanSpec,
    decode,
    encode,
    headers_for,
    make_decoder,
    make_spans,
    record,
    span_hex,
)

from observatory.schemas.dialects import Limits
from observatory.schemas.otlp import DecodeResult

GOOD = {
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.usage.input_tokens": 100,
    "gen_ai.usage.output_tokens": 10,
}
PLAIN = {"http.request.method": "GET", "url.path": "/health"}
HEADERS = [("content-type", b"application/json"), ("x-trace", b"abc")]
JSON_HEADER = [("content-type", b"application/json")]
PROTO_HEADER = [("content-type", b"application/x-protobuf")]


def good_proto() -> bytes:
    return record(GOOD, PLAIN, encoding=PROTO)[0]


def good_json() -> bytes:
    return record(GOOD, PLAIN, encoding=JSON)[0]


def assert_record_dead(result: DecodeResult, value, reason: str, headers=()) -> None:
    assert result.calls == []
    assert len(result.dead_letters) == 1, [(d.reason, d.detail) for d in result.dead_letters]
    dead = result.dead_letters[0]
    assert dead.reason == reason, dead.detail
    assert dead.detail
    assert dead.value == (value or b"")  # the original bytes, unchanged
    assert dead.source == SOURCE
    assert dead.headers == list(headers)
    c = result.counters
    assert (c.records, c.dead_lettered_records) == (1, 1)
    assert (c.normalized, c.skipped_non_genai, c.dead_lettered_spans) == (0, 0, 0)


# --- record-level rejects ------------------------------------------------------------------


def _truncated(cut: int) -> bytes:
    value = good_proto()
    return value[: cut if cut > 0 else len(value) + cut]


def _empty_traces_data() -> bytes:
    data = TracesData()
    rs = data.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "svc"
    rs.scope_spans.add().scope.name = "lib"
    return data.SerializeToString()


RECORD_CASES = [
    # (value factory, headers, decoder kwargs, reason)
    pytest.param(lambda: b"", [], {}, "empty_record", id="empty-bytes"),
    pytest.param(lambda: None, [], {}, "empty_record", id="none"),
    pytest.param(lambda: b"\xff\xff\xff\xff\xff", [], {}, "invalid_protobuf", id="random-ff"),
    pytest.param(lambda: bytes(range(256)), [], {}, "invalid_protobuf", id="random-range"),
    pytest.param(lambda: b"garbage!", [], {}, "invalid_protobuf", id="random-ascii"),
    pytest.param(lambda: b"\x0a\xff\x01", [], {}, "invalid_protobuf", id="length-past-end"),
    *[
        pytest.param(
            lambda cut=cut: _truncated(cut), [], {}, "invalid_protobuf", id=f"truncated-proto-{cut}"
        )
        for cut in (1, 2, 5, 17, 60, -40, -1)
    ],
    pytest.param(
        lambda: b'{"resourceSpans": [ {"resource": ', [], {}, "invalid_json", id="truncated-json"
    ),
    pytest.param(lambda: good_json()[:-1], [], {}, "invalid_json", id="json-missing-brace"),
    pytest.param(
        lambda: b'{"resourceSpans": "\xff\xfe"}', [], {}, "invalid_json", id="json-not-utf8"
    ),
    pytest.param(lambda: b"{'single': 'quotes'}", [], {}, "invalid_json", id="json-syntax"),
    pytest.param(lambda: b'{"foo": 1}', [], {}, "empty_record", id="json-no-resourceSpans"),
    pytest.param(
        lambda: b'{"resourceSpans": null}', [], {}, "empty_record", id="json-resourceSpans-null"
    ),
    pytest.param(
        lambda: b'{"resourceSpans": {}}', [], {}, "invalid_json", id="json-resourceSpans-object"
    ),
    pytest.param(
        lambda: b'{"resourceSpans": [1]}',
        [],
        {},
        "invalid_json",
        id="json-resourceSpans-entry-number",
    ),
    pytest.param(
        lambda: b'{"resourceSpans": [{"scopeSpans": {"x": 1}}]}',
        [],
        {},
        "invalid_json",
        id="json-scopeSpans-object",
    ),
    pytest.param(
        lambda: b'{"resourceSpans": [{"scopeSpans": [{"spans": 5}]}]}',
        [],
        {},
        "invalid_json",
        id="json-spans-number",
    ),
    pytest.param(
        lambda: (
            b'{"resourceSpans": [{"resource": {"attributes": 7}, "scopeSpans": [{"spans": [{}]}]}]}'
        ),
        [],
        {},
        "invalid_json",
        id="json-resource-attributes-number",
    ),
    pytest.param(
        lambda: b'{"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        [],
        {},
        "invalid_json",
        id="json-10000-nested-arrays",
    ),
    pytest.param(
        lambda: b'{"resourceSpans":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        [],
        {},
        "invalid_json",
        id="json-10000-nested-resourceSpans",
    ),
    pytest.param(
        lambda: b'{"a":' * 5000 + b"1" + b"}" * 5000,
        [],
        {},
        "invalid_json",
        id="json-5000-nested-objects",
    ),
    # the wrong encoding for the topic or the header
    pytest.param(
        good_json,
        [],
        {"default_encoding": "otlp_proto"},
        "wrong_encoding",
        id="json-on-proto-topic",
    ),
    pytest.param(
        good_proto,
        [],
        {"default_encoding": "otlp_json"},
        "wrong_encoding",
        id="proto-on-json-topic",
    ),
    pytest.param(good_proto, JSON_HEADER, {}, "wrong_encoding", id="proto-with-json-header"),
    pytest.param(
        good_proto,
        [("Content-Type", b"application/json; charset=utf-8")],
        {},
        "wrong_encoding",
        id="proto-with-json-header-mixed-case",
    ),
    pytest.param(good_json, PROTO_HEADER, {}, "wrong_encoding", id="json-with-proto-header"),
    pytest.param(
        good_json,
        [("otlp.encoding", b"otlp_proto")],
        {"default_encoding": "otlp_json"},
        "wrong_encoding",
        id="header-beats-topic-config",
    ),
    # records without spans
    pytest.param(_empty_traces_data, [], {}, "empty_record", id="proto-resource-without-spans"),
    pytest.param(lambda: encode([], PROTO), [], {}, "empty_record", id="proto-encode-no-spans"),
    pytest.param(
        lambda: b'{"resourceSpans": []}', [], {}, "empty_record", id="json-empty-resourceSpans"
    ),
    pytest.param(
        lambda: b'{"resourceSpans": [{"resource": {}, "scopeSpans": []}]}',
        [],
        {},
        "empty_record",
        id="json-resource-without-scopes",
    ),
    pytest.param(
        lambda: b'{"resourceSpans": [{"scopeSpans": [{"scope": {}, "spans": []}]}]}',
        [],
        {},
        "empty_record",
        id="json-scope-without-spans",
    ),
    # size
    pytest.param(
        good_proto, [], {"max_record_bytes": 64}, "oversized_record", id="proto-oversized"
    ),
    pytest.param(good_json, [], {"max_record_bytes": 64}, "oversized_record", id="json-oversized"),
]


@pytest.mark.parametrize(("make_value", "headers", "decoder_kwargs", "reason"), RECORD_CASES)
def test_record_level_reject(make_value, headers, decoder_kwargs, reason):
    value = make_value()
    result = decode(value, make_decoder(**decoder_kwargs), headers)
    assert_record_dead(result, value, reason, headers)


@pytest.mark.parametrize(
    ("encoding", "headers", "default_encoding"),
    [
        (JSON, JSON_HEADER, "otlp_proto"),  # the header wins over the topic config
        (JSON, [("content-type", b"Application/JSON ; charset=utf-8")], "auto"),
        (JSON, [("encoding", b"otlp_json")], "otlp_json"),
        (PROTO, PROTO_HEADER, "otlp_json"),
        (PROTO, [("content_type", b"application/protobuf")], "auto"),
        (PROTO, [("otlp.encoding", b"otlp_proto")], "otlp_proto"),
        (PROTO, [("content-type", b"text/plain")], "auto"),  # unknown header value: ignored
        (JSON, [], "auto"),
        (PROTO, [], "auto"),
    ],
)
def test_matching_encoding_decodes(encoding, headers, default_encoding):
    value, spans = record(GOOD, PLAIN, encoding=encoding)
    result = decode(value, make_decoder(default_encoding=default_encoding), headers)
    assert result.dead_letters == []
    assert [c.span_id for c in result.calls] == [span_hex(spans[0])]


def test_decoder_refuses_an_unknown_encoding_setting():
    with pytest.raises(ValueError):
        make_decoder(default_encoding="xml")


def test_record_level_reject_discards_spans_decoded_before_it():
    """A good first resource followed by a broken one: the record fails as a whole."""
    data = json.loads(good_json())
    data["resourceSpans"].append("not an object")
    value = json.dumps(data).encode()
    result = decode(value)
    assert_record_dead(result, value, "invalid_json")


def test_record_with_only_whitespace_before_json_is_json():
    value = b" \n\t" + good_json()
    result = decode(value)
    assert len(result.calls) == 1 and result.dead_letters == []


# --- span-level rejects ----------------------------------------------------------------------

BIG = 50_000_000  # Limits().max_tokens


def _bad(attrs=None, **spec) -> SpanSpec:
    return SpanSpec({**GOOD, **(attrs or {})}, **spec)


#: Span attributes that become a dimension of a call (a text column in TimescaleDB).
DIMENSION_KEYS = (
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.provider.name",
    "gen_ai.conversation.id",
    "session.id",
    "gen_ai.agent.name",
    "gen_ai.tool.name",
    "error.type",
    "tenant.id",
)

SPAN_CASES = [
    # (bad span, decoder kwargs, reason)
    *[
        pytest.param(_bad({key: value}), {}, "invalid_token_count", id=f"{key}={value!r}")
        for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")
        for value in (
            -1,
            float("nan"),
            float("inf"),
            float("-inf"),
            BIG + 1,
            10**15,
            1.5,
            "lots",
            True,
        )
    ],
    *[
        # the key alone (a higher-precedence key would hide it)
        pytest.param(
            SpanSpec({"gen_ai.request.model": "gpt-4o", key: -7}),
            {},
            "invalid_token_count",
            id=f"{key}=-7",
        )
        for key in (
            "gen_ai.usage.prompt_tokens",
            "llm.token_count.prompt",
            "gen_ai.usage.total_tokens",
            "llm.usage.total_tokens",
            "gen_ai.usage.cache_read.input_tokens",
            "llm.token_count.prompt_details.cache_read",
            "gen_ai.usage.reasoning.output_tokens",
            "llm.usage.reasoning_tokens",
        )
    ],
    pytest.param(
        _bad({"gen_ai.usage.input_tokens": 151}),
        {"limits": Limits(max_tokens=150)},
        "invalid_token_count",
        id="tokens-over-custom-limit",
    ),
    pytest.param(
        SpanSpec(
            {
                "langfuse.observation.type": "generation",
                "langfuse.observation.usage_details": '{"input": -3}',
            }
        ),
        {},
        "invalid_token_count",
        id="langfuse-usage-negative",
    ),
    pytest.param(
        SpanSpec(
            {
                "langfuse.observation.type": "generation",
                "langfuse.observation.usage_details": '{"input": 1e12}',
            }
        ),
        {},
        "invalid_token_count",
        id="langfuse-usage-absurd",
    ),
    *[
        pytest.param(_bad({key: value}), {}, "invalid_cost", id=f"{key}={value!r}")
        for key in ("llm.cost.total", "gen_ai.usage.cost")
        for value in (float("nan"), -0.01, float("inf"), 100_000.01, "free", False)
    ],
    pytest.param(
        _bad({"gen_ai.usage.cost": 2.0}),
        {"limits": Limits(max_cost_usd=1.0)},
        "invalid_cost",
        id="cost-over-custom-limit",
    ),
    pytest.param(
        SpanSpec(
            {
                "langfuse.observation.type": "generation",
                "langfuse.observation.cost_details": '{"total": -1}',
            }
        ),
        {},
        "invalid_cost",
        id="langfuse-cost-negative",
    ),
    pytest.param(
        SpanSpec(
            {
                "langfuse.observation.type": "generation",
                "langfuse.observation.usage_details": "not json",
            }
        ),
        {},
        "invalid_attribute",
        id="langfuse-usage-not-json",
    ),
    pytest.param(
        SpanSpec(
            {
                "langfuse.observation.type": "generation",
                "langfuse.observation.cost_details": "[1, 2]",
            }
        ),
        {},
        "invalid_attribute",
        id="langfuse-cost-json-array",
    ),
    # times
    pytest.param(_bad(end_ns=0), {}, "invalid_timestamp", id="end-time-0"),
    pytest.param(
        _bad(start_ns=END_NS + 1, end_ns=END_NS), {}, "invalid_timestamp", id="start-after-end"
    ),
    pytest.param(
        _bad(start_ns=END_NS - 7201 * NS, end_ns=END_NS - 7200 * NS),
        {"limits": Limits(max_past_skew_s=3600), "now": lambda: END_S},
        "timestamp_skew",
        id="too-far-in-the-past",
    ),
    pytest.param(
        _bad(start_ns=END_NS + 600 * NS, end_ns=END_NS + 601 * NS),
        {"limits": Limits(max_future_skew_s=300), "now": lambda: END_S},
        "timestamp_skew",
        id="too-far-in-the-future",
    ),
    pytest.param(
        _bad(start_ns=START_NS - 10**6 * NS, end_ns=END_NS - 10**6 * NS),
        {"limits": Limits(max_past_skew_s=3600, max_future_skew_s=300), "now": lambda: END_S},
        "timestamp_skew",
        id="both-limits-past",
    ),
    # oversized attributes
    *[
        pytest.param(
            _bad({key: "x" * 65}),
            {"limits": Limits(max_attribute_bytes=64)},
            "oversized_attribute",
            id=f"{key}-65-over-64",
        )
        for key in (
            "gen_ai.request.model",
            "gen_ai.response.model",
            "gen_ai.provider.name",
            "gen_ai.conversation.id",
            "gen_ai.agent.name",
            "gen_ai.tool.name",
            "error.type",
            "tenant.id",
        )
    ],
    pytest.param(
        _bad({"gen_ai.request.model": "m" * 16_385}),
        {},
        "oversized_attribute",
        id="model-over-default-limit",
    ),
    pytest.param(
        _bad({"tenant.id": "t" * 16_385}),
        {},
        "oversized_attribute",
        id="span-tenant-over-default-limit",
    ),
    # Dimensions become TimescaleDB text and unique-key columns: no NUL (PostgreSQL text
    # cannot hold one) and at most ingest.max_dimension_bytes (a btree entry is <= 2704 bytes).
    *[
        pytest.param(_bad({key: "gpt\x00-4o"}), {}, "invalid_text", id=f"{key}-nul")
        for key in DIMENSION_KEYS
    ],
    *[
        pytest.param(_bad({key: "x" * 257}), {}, "oversized_dimension", id=f"{key}-257-over-256")
        for key in DIMENSION_KEYS
    ],
    pytest.param(_bad({"gen_ai.request.model": "\x00"}), {}, "invalid_text", id="model-only-nul"),
    pytest.param(
        _bad({"gen_ai.request.model": "é" * 129}),  # 129 characters, 258 UTF-8 bytes
        {},
        "oversized_dimension",
        id="dimension-limit-in-bytes",
    ),
    pytest.param(
        _bad({"gen_ai.request.model": "m" * 5_000}),
        {},
        "oversized_dimension",
        id="model-5kb",
    ),
    pytest.param(
        _bad({"gen_ai.request.model": "x" * 65}),
        {"limits": Limits(max_dimension_bytes=64)},
        "oversized_dimension",
        id="model-over-custom-dimension-limit",
    ),
    pytest.param(
        SpanSpec({"openinference.span.kind": "TOOL", "tool.name": "t" * 300}),
        {},
        "oversized_dimension",
        id="tool-name-300",
    ),
    pytest.param(
        SpanSpec({"traceloop.span.kind": "agent", "traceloop.entity.name": "a\x00"}),
        {},
        "invalid_text",
        id="traceloop-agent-nul",
    ),
]


@pytest.mark.parametrize(("bad", "decoder_kwargs", "reason"), SPAN_CASES)
def test_span_level_reject_keeps_the_other_spans(encoding, bad, decoder_kwargs, reason):
    # The resource has no tenant, so a tenant.id span attribute affects the bad span only.
    resource = {"service.name": "chat-api", "deployment.environment.name": "prod"}
    value, spans = record(GOOD, bad, PLAIN, encoding=encoding, resource=resource)
    good_span, bad_span, _ = spans
    decoder = make_decoder(**decoder_kwargs)
    headers = [*headers_for(encoding), ("x-trace", b"abc")]
    result = decode(value, decoder, headers)

    assert [c.span_id for c in result.calls] == [span_hex(good_span)]
    assert len(result.dead_letters) == 1
    dead = result.dead_letters[0]
    assert dead.reason == reason, dead.detail
    assert dead.detail
    assert dead.source == SOURCE
    assert dead.headers == headers
    c = result.counters
    assert (c.records, c.spans, c.normalized, c.skipped_non_genai) == (1, 3, 1, 1)
    assert (c.dead_lettered_spans, c.dead_lettered_records) == (1, 0)
    assert c.normalized + c.skipped_non_genai + c.dead_lettered_spans == c.spans

    # The dead letter is a valid record of the same encoding holding just the bad span,
    # with its resource and scope.
    if encoding == PROTO:
        data = TracesData()
        data.ParseFromString(dead.value)
        assert len(data.resource_spans) == 1
        (scope_spans,) = data.resource_spans[0].scope_spans
        assert [s.span_id.hex() for s in scope_spans.spans] == [span_hex(bad_span)]
        assert scope_spans.scope.name == "tests.otel_helpers"
        resource_attrs = {
            kv.key: kv.value.string_value for kv in data.resource_spans[0].resource.attributes
        }
    else:
        data = json.loads(dead.value)
        (resource_spans,) = data["resourceSpans"]
        (scope_spans,) = resource_spans["scopeSpans"]
        assert [s["spanId"] for s in scope_spans["spans"]] == [span_hex(bad_span)]
        assert scope_spans["scope"]["name"] == "tests.otel_helpers"
        resource_attrs = {
            kv["key"]: kv["value"]["stringValue"] for kv in resource_spans["resource"]["attributes"]
        }
    assert resource_attrs == resource

    # Replaying the dead letter gives the same verdict for the same span.
    again = decode(dead.value, decoder, headers)
    assert [d.reason for d in again.dead_letters] == [reason]
    assert again.counters.dead_lettered_spans == again.counters.spans == 1


@pytest.mark.parametrize(
    ("attrs", "decoder_kwargs", "spec"),
    [
        ({"gen_ai.usage.input_tokens": BIG}, {}, {}),
        ({"gen_ai.usage.input_tokens": 0}, {}, {}),
        ({"gen_ai.usage.input_tokens": 12.0}, {}, {}),
        ({"gen_ai.usage.input_tokens": "12"}, {}, {}),
        ({"gen_ai.usage.cost": 100_000.0}, {}, {}),
        ({"gen_ai.usage.cost": 0.0}, {}, {}),
        ({"gen_ai.request.model": "x" * 64}, {"limits": Limits(max_attribute_bytes=64)}, {}),
        ({"gen_ai.request.model": "x" * 256}, {}, {}),
        ({"gen_ai.request.model": "é" * 128}, {}, {}),  # 256 bytes
        ({"gen_ai.conversation.id": "s" * 256, "gen_ai.agent.name": "a" * 256}, {}, {}),
        ({"gen_ai.request.model": "x" * 300}, {"limits": Limits(max_dimension_bytes=300)}, {}),
        # only dimensions must be database text: NUL elsewhere is fine, as is any other control
        ({"gen_ai.tool.call.arguments": '{"q": "\x00"}'}, {}, {}),
        ({"gen_ai.response.finish_reasons": ["st\x00p"]}, {}, {}),
        ({"gen_ai.request.model": "gpt\x01\x1f\x7f-4o"}, {}, {}),
        ({}, {"limits": Limits(max_past_skew_s=3600), "now": lambda: END_S + 3599}, {}),
        ({}, {"limits": Limits(max_future_skew_s=300), "now": lambda: END_S - 299}, {}),
        # skew checks are off by default
        ({}, {"now": lambda: END_S + 10**9}, {}),
        ({}, {"now": lambda: 0.0}, {}),
        ({}, {}, {"start_ns": 0, "end_ns": END_NS}),
        ({}, {}, {"start_ns": END_NS, "end_ns": END_NS}),
    ],
)
def test_values_at_the_limits_are_accepted(encoding, attrs, decoder_kwargs, spec):
    value, _ = record(SpanSpec({**GOOD, **attrs}, **spec), encoding=encoding)
    result = decode(value, make_decoder(**decoder_kwargs), headers_for(encoding))
    assert result.dead_letters == []
    assert len(result.calls) == 1


def test_oversized_service_name_is_rejected_like_other_dimensions(encoding):
    value, _ = record(GOOD, encoding=encoding, resource={"service.name": "s" * 100})
    result = decode(value, make_decoder(limits=Limits(max_attribute_bytes=64)))
    assert result.calls == []
    assert [d.reason for d in result.dead_letters] == ["oversized_attribute"]


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        ({"service.name": "chat\x00api"}, "invalid_text"),
        ({"service.name": "s" * 257}, "oversized_dimension"),
        ({"service.name": "api", "tenant.id": "ac\x00me"}, "invalid_text"),
        ({"service.name": "api", "tenant.id": "t" * 257}, "oversized_dimension"),
        ({"service.name": "api", "deployment.environment.name": "pr\x00d"}, "invalid_text"),
        ({"service.name": "api", "deployment.environment": "e" * 300}, "oversized_dimension"),
    ],
)
def test_resource_dimensions_must_fit_the_database(encoding, resource, reason):
    value, _ = record(GOOD, PLAIN, encoding=encoding, resource=resource)
    result = decode(value, headers=headers_for(encoding))
    assert result.calls == []
    assert [d.reason for d in result.dead_letters] == [reason]
    assert result.counters.skipped_non_genai == 1


def test_span_environment_must_fit_the_database(encoding):
    resource = {"service.name": "api"}  # no environment: the span's is read
    for env, reason in (("pr\x00d", "invalid_text"), ("e" * 257, "oversized_dimension")):
        value, _ = record(
            GOOD, _bad({"gen_ai.environment": env}), encoding=encoding, resource=resource
        )
        result = decode(value, headers=headers_for(encoding))
        assert [d.reason for d in result.dead_letters] == [reason]
        assert len(result.calls) == 1


def test_dimension_rejects_name_the_field(encoding):
    value, _ = record(
        _bad({"gen_ai.request.model": "m" * 5_000}),
        _bad({"gen_ai.conversation.id": "s\x00"}),
        encoding=encoding,
    )
    result = decode(value, headers=headers_for(encoding))
    (big, nul) = result.dead_letters
    assert big.reason == "oversized_dimension" and big.detail.startswith("model is 5000 bytes")
    assert nul.reason == "invalid_text" and nul.detail.startswith("session_id ")


def _json_record(span_attrs: dict, resource_attrs: dict, trace_id: str = "ab" * 16) -> bytes:
    """An OTLP/JSON record written by hand: JSON can spell what protobuf cannot."""

    def kvs(attrs):
        return [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]

    good_span = {
        "traceId": "cd" * 16,
        "spanId": "02" * 8,
        "startTimeUnixNano": str(START_NS),
        "endTimeUnixNano": str(END_NS),
        "attributes": kvs({"gen_ai.request.model": "gpt-4o"}),
    }
    bad_span = {**good_span, "traceId": trace_id, "spanId": "01" * 8, "attributes": kvs(span_attrs)}
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": kvs(resource_attrs)},
                    "scopeSpans": [{"scope": {"name": "t"}, "spans": [bad_span, good_span]}],
                }
            ]
        }
    ).encode()


@pytest.mark.parametrize(
    ("span_attrs", "resource_attrs", "trace_id", "reason"),
    [
        # a lone surrogate has no UTF-8 form: the database driver cannot send it
        ({"gen_ai.request.model": "gpt\ud800"}, {}, "ab" * 16, "invalid_text"),
        ({"gen_ai.request.model": "o3", "session.id": "\udfff"}, {}, "ab" * 16, "invalid_text"),
        (
            {"gen_ai.request.model": "o3", "gen_ai.agent.name": "a\u0000"},
            {},
            "ab" * 16,
            "invalid_text",
        ),
        ({"gen_ai.request.model": "o3"}, {"service.name": "\ud83d"}, "ab" * 16, "invalid_text"),
        # the trace id becomes the session id of a span without one
        ({"gen_ai.request.model": "o3"}, {}, "ab" * 129, "oversized_dimension"),
    ],
)
def test_json_only_text_that_cannot_reach_the_database(
    span_attrs, resource_attrs, trace_id, reason
):
    value = _json_record(span_attrs, resource_attrs, trace_id)
    result = decode(value, headers=JSON_HEADER)
    if "service.name" in resource_attrs:  # both spans of the resource
        assert [d.reason for d in result.dead_letters] == [reason, reason]
        assert result.calls == []
    else:
        assert [d.reason for d in result.dead_letters] == [reason]
        assert [c.model for c in result.calls] == ["gpt-4o"]


@pytest.mark.parametrize("size", [16, 128, 129, 2_000])
def test_trace_id_is_a_bounded_dimension(size):
    """OTLP trace ids are 16 bytes, but nothing on the wire enforces it; a long one
    would become the session id (``trace:<hex>``) of a span without one."""
    data = TracesData()
    rs = data.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "api"
    span = rs.scope_spans.add().spans.add()
    span.trace_id, span.span_id = b"\x07" * size, b"\x01" * 8
    span.start_time_unix_nano, span.end_time_unix_nano = START_NS, END_NS
    kv = span.attributes.add()
    kv.key, kv.value.string_value = "gen_ai.request.model", "gpt-4o"
    result = decode(data.SerializeToString())
    if size * 2 <= 256:
        assert result.dead_letters == [] and len(result.calls) == 1
    else:
        assert [d.reason for d in result.dead_letters] == ["oversized_dimension"]
        assert result.dead_letters[0].detail.startswith("trace_id ")


def test_oversized_resource_tenant_rejects_every_genai_span_of_the_resource(encoding):
    value, _ = record(
        GOOD, GOOD, PLAIN, encoding=encoding, resource={**RESOURCE, "tenant.id": "t" * 100}
    )
    result = decode(
        value, make_decoder(limits=Limits(max_attribute_bytes=64)), headers_for(encoding)
    )
    assert result.calls == []
    assert [d.reason for d in result.dead_letters] == ["oversized_attribute"] * 2
    c = result.counters
    assert (c.spans, c.normalized, c.skipped_non_genai, c.dead_lettered_spans) == (3, 0, 1, 2)


def test_every_span_bad_gives_one_dead_letter_each(encoding):
    specs = [_bad({"gen_ai.usage.input_tokens": -i - 1}) for i in range(5)]
    value, _ = record(*specs, encoding=encoding)
    result = decode(value, headers=headers_for(encoding))
    assert result.calls == []
    assert len(result.dead_letters) == 5
    assert {d.reason for d in result.dead_letters} == {"invalid_token_count"}
    assert result.counters.dead_lettered_spans == 5 and result.counters.dead_lettered_records == 0


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda s: s.update(traceId=12345), "invalid_span"),
        (lambda s: s.update(spanId="not-hex-or-base64!"), "invalid_span"),
        (lambda s: s.update(endTimeUnixNano="soon"), "invalid_timestamp"),
        (lambda s: s.update(startTimeUnixNano=[1]), "invalid_timestamp"),
        (lambda s: s.update(endTimeUnixNano="-5"), "invalid_timestamp"),
        (lambda s: s.update(attributes={"not": "a list"}), "invalid_json"),
    ],
)
def test_json_span_shape_errors_are_span_level(mutate, reason):
    value, spans = record(GOOD, GOOD, encoding=JSON)
    data = json.loads(value)
    mutate(data["resourceSpans"][0]["scopeSpans"][0]["spans"][1])
    result = decode(json.dumps(data).encode())
    assert [c.span_id for c in result.calls] == [span_hex(spans[0])]
    assert [d.reason for d in result.dead_letters] == [reason]


def test_json_span_that_is_not_an_object_is_span_level():
    data = json.loads(record(GOOD, encoding=JSON)[0])
    data["resourceSpans"][0]["scopeSpans"][0]["spans"].append("oops")
    result = decode(json.dumps(data).encode())
    assert len(result.calls) == 1
    (dead,) = result.dead_letters
    assert dead.reason == "invalid_span"
    assert json.loads(dead.value)["resourceSpans"][0]["scopeSpans"][0]["spans"] == ["oops"]


# --- regressions: bugs found by these tests and fixed ------------------------------------------


def _proto_with_first_resource_of(size: int) -> tuple[bytes, list]:
    """A real SDK span whose first ResourceSpans serializes to exactly ``size`` bytes."""
    for pad in range(0, 100):
        spans = make_spans(
            SpanSpec({"gen_ai.request.model": "gpt-4o"}, name="c" + "x" * pad, child=False),
            resource={},
            scope_name="t",
        )
        if encode_spans(spans).resource_spans[0].ByteSize() == size:
            return encode(spans, PROTO), spans
    raise AssertionError(f"no padding gives a {size}-byte ResourceSpans")


@pytest.mark.parametrize("default_encoding", ["auto", "otlp_proto"])
def test_proto_whose_first_resource_is_123_bytes_decodes(default_encoding):
    value, spans = _proto_with_first_resource_of(123)
    assert value[:2] == b"\n{"
    result = decode(value, make_decoder(default_encoding=default_encoding))
    assert [d.reason for d in result.dead_letters] == []
    assert [c.span_id for c in result.calls] == [span_hex(spans[0])]


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "key", ["langfuse.observation.usage_details", "langfuse.observation.cost_details"]
)
def test_deeply_nested_langfuse_json_is_a_span_level_reject(key):
    value, spans = record(
        GOOD, SpanSpec({"langfuse.observation.type": "generation", key: DEEP}), encoding=PROTO
    )
    result = decode(value)
    assert [c.span_id for c in result.calls] == [span_hex(spans[0])]
    assert [d.reason for d in result.dead_letters] == ["invalid_attribute"]


def test_ancient_naive_completion_start_time_does_not_lose_the_record(encoding):
    bad = SpanSpec({**GOOD, "langfuse.observation.completion_start_time": "0001-01-01T00:00:00"})
    value, spans = record(GOOD, bad, encoding=encoding)
    result = decode(value, headers=headers_for(encoding))
    # the other span survives whatever happens to the odd one
    assert span_hex(spans[0]) in [c.span_id for c in result.calls]
    assert result.counters.dead_lettered_records == 0


@pytest.mark.parametrize(
    "attribute",
    [
        {"key": "gen_ai.response.finish_reasons", "value": {"arrayValue": {"values": 5}}},
        {"key": ["gen_ai.request.model"], "value": {"stringValue": "gpt-4o"}},
        {"key": {"k": 1}, "value": {"stringValue": "gpt-4o"}},
    ],
    ids=["arrayValue-values-not-a-list", "key-is-a-list", "key-is-an-object"],
)
def test_malformed_json_attribute_is_span_level(attribute):
    value, spans = record(GOOD, GOOD, encoding=JSON)
    data = json.loads(value)
    data["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["attributes"].append(attribute)
    result = decode(json.dumps(data).encode())
    assert span_hex(spans[0]) in [c.span_id for c in result.calls]
    assert result.counters.dead_lettered_records == 0


@pytest.mark.parametrize(
    "text",
    ["[" * 100, "{" * 65, "[" * 60 + "]" * 60],
    ids=["100-open-brackets", "65-open-braces", "balanced-60-deep-json-text"],
)
def test_brackets_inside_json_strings_are_not_nesting(text):
    value, spans = record({**GOOD, "input.value": text}, encoding=JSON)
    assert json.loads(value)  # shallow, valid JSON
    result = decode(value)
    assert [d.reason for d in result.dead_letters] == []
    assert [c.span_id for c in result.calls] == [span_hex(spans[0])]


def test_empty_export_request_is_empty_record_in_both_encodings():
    reasons = {enc: decode(encode([], enc)).dead_letters[0].reason for enc in (PROTO, JSON)}
    assert reasons == {PROTO: "empty_record", JSON: "empty_record"}


@pytest.mark.parametrize("value", [b"[1, 2]", b"null", b'"resourceSpans"', b"42", b"[]"])
def test_json_declared_record_that_is_not_an_object_is_invalid_json(value):
    assert_record_dead(decode(value, headers=JSON_HEADER), value, "invalid_json", JSON_HEADER)


def test_attribute_limit_is_in_bytes(encoding):
    model = "é" * 40  # 40 characters, 80 UTF-8 bytes
    value, _ = record({**GOOD, "gen_ai.request.model": model}, encoding=encoding)
    result = decode(
        value, make_decoder(limits=Limits(max_attribute_bytes=64)), headers_for(encoding)
    )
    assert [d.reason for d in result.dead_letters] == ["oversized_attribute"]


# --- property tests ----------------------------------------------------------------------------


def _base_records() -> list[bytes]:
    specs = (
        GOOD,
        PLAIN,
        SpanSpec({**GOOD, "gen_ai.usage.input_tokens": -1}),
        {"openinference.span.kind": "TOOL", "tool.name": "t", "session.id": "s"},
        {
            "langfuse.observation.type": "generation",
            "langfuse.observation.model.name": "gpt-4o",
            "langfuse.observation.usage_details": '{"input": 5, "output": 2}',
            "langfuse.observation.cost_details": '{"total": 0.5}',
        },
    )
    spans = make_spans(*specs) + make_spans(GOOD, resource={"service.name": "other"})
    return [
        encode(spans, PROTO),
        encode(spans, JSON),
        encode(spans[:1], PROTO),
        encode(spans[:1], JSON),
    ]


BASES = _base_records()
DECODERS = [
    make_decoder(),
    make_decoder(default_encoding="otlp_proto"),
    make_decoder(default_encoding="otlp_json"),
    make_decoder(limits=Limits(max_past_skew_s=60, max_future_skew_s=60), now=lambda: END_S),
]
HEADER_CHOICES = [
    [],
    JSON_HEADER,
    PROTO_HEADER,
    [("content-type", b"\xff\xfe")],
    [("x", b"y"), ("encoding", b"otlp_json")],
]
PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_invariants(result, value, headers) -> None:
    assert isinstance(result, DecodeResult)
    c = result.counters
    assert c.records == 1
    for dead in result.dead_letters:
        assert isinstance(dead.reason, str) and dead.reason
        assert isinstance(dead.detail, str)
        assert isinstance(dead.value, bytes)
        assert dead.source == SOURCE
        assert dead.headers == list(headers)
    if c.dead_lettered_records:
        assert c.dead_lettered_records == 1
        assert result.calls == []
        assert len(result.dead_letters) == 1
        assert result.dead_letters[0].value == (value or b"")
        assert (c.normalized, c.skipped_non_genai, c.dead_lettered_spans) == (0, 0, 0)
    else:
        assert c.spans >= 1
        assert c.normalized + c.skipped_non_genai + c.dead_lettered_spans == c.spans
        assert len(result.calls) == c.normalized
        assert len(result.dead_letters) == c.dead_lettered_spans
    for call in result.calls:
        for name in (
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "reasoning_tokens",
            "total_tokens",
        ):
            count = getattr(call, name)
            assert isinstance(count, int) and 0 <= count <= Limits().max_tokens, name
        assert call.cost_usd is None or (math.isfinite(call.cost_usd) and call.cost_usd >= 0)
        for name in (
            "tenant",
            "service",
            "provider",
            "model",
            "operation",
            "session_id",
            "trace_id",
            "span_id",
            "error_type",
        ):
            assert isinstance(getattr(call, name), str), name
        # Every text that reaches a TimescaleDB column can be stored and indexed there.
        for name in (
            "tenant",
            "service",
            "environment",
            "provider",
            "model",
            "agent",
            "tool",
            "session_id",
            "trace_id",
            "error_type",
        ):
            text = getattr(call, name)
            assert "\x00" not in text, name
            assert len(text.encode("utf-8")) <= Limits().max_dimension_bytes, name
        assert call.end_ns > 0


@PROPERTY_SETTINGS
@given(
    value=st.one_of(st.binary(max_size=600), st.binary(max_size=60).map(lambda b: b"{" + b)),
    decoder=st.sampled_from(DECODERS),
    headers=st.sampled_from(HEADER_CHOICES),
)
def test_random_bytes_never_raise(value, decoder, headers):
    check_invariants(decoder.decode(value, SOURCE, headers), value, headers)


@st.composite
def mutated_records(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(("flip", "truncate", "insert", "delete", "overwrite")))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "overwrite" and data:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


@PROPERTY_SETTINGS
@given(
    value=mutated_records(),
    decoder=st.sampled_from(DECODERS),
    headers=st.sampled_from(HEADER_CHOICES),
)
def test_mutated_records_never_raise(value, decoder, headers):
    check_invariants(decoder.decode(value, SOURCE, headers), value, headers)


_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["", "NaN", "-1", "1e400", "0x10", "STATUS_CODE_ERROR", "AAAAAAAAAAA="]),
)
_JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    [
                        "stringValue",
                        "intValue",
                        "doubleValue",
                        "boolValue",
                        "arrayValue",
                        "kvlistValue",
                        "bytesValue",
                        "values",
                        "key",
                        "value",
                        "spans",
                        "code",
                    ]
                ),
                st.text(max_size=6),
            ),
            children,
            max_size=3,
        ),
    ),
    max_leaves=12,
)


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*path, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _paths(child, (*path, i))


@st.composite
def structurally_mutated_json(draw) -> bytes:
    data = json.loads(BASES[1])
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(data))
        path = draw(st.sampled_from(paths[1:]))  # never the root
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = draw(_JSON_VALUES)
    return json.dumps(data).encode()


@PROPERTY_SETTINGS
@given(value=structurally_mutated_json(), decoder=st.sampled_from(DECODERS[:1] + DECODERS[3:]))
def test_structurally_mutated_json_never_raises(value, decoder):
    check_invariants(decoder.decode(value, SOURCE, JSON_HEADER), value, JSON_HEADER)


def test_seeded_fuzz_of_the_simulator_malformed_records():
    """The simulator's own malformed records all land in dead letters."""
    from observatory.flows.simulate import malformed_record

    rng = random.Random(1234)
    goods = BASES[2:]  # one span each, so no truncation point leaves a valid shorter record
    for i in range(300):
        value = malformed_record(rng, goods[i % len(goods)])
        result = decode(value)
        check_invariants(result, value, [])
        assert result.counters.dead_lettered_records == 1
        assert result.dead_letters[0].reason in ("invalid_protobuf", "invalid_json", "empty_record")
