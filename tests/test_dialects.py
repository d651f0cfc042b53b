"""Every GenAI attribute dialect, through real SDK spans, both OTLP encodings and the decoder.

Expected prices are typed in from schemas/prices.yaml (USD per 1M tokens) and
the cost arithmetic is done by hand here, independently of ``Price.cost``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
from datetime import UTC, datetime

import pytest
from opentelemetry.trace import StatusCode
from otel_helpers import (
    END_NS,
    PARENT_HEX,
    RESOURCE,
    START_NS,
    TRACE_HEX,
    SpanSpec,
    decode,
    encode,
    headers_for,
    make_decoder,
    make_spans,
    one_call,
    record,
    span_hex,
    trace_hex,
)

from observatory.schemas.records import LlmCall

M = 1_000_000  # prices are per 1M tokens


def _blake(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def expected_call(span, **fields) -> LlmCall:
    base = dict(
        end_ns=END_NS,
        duration_ms=1500.0,
        trace_id=TRACE_HEX,
        span_id=span_hex(span),
        parent_span_id=PARENT_HEX,
        tenant="acme",
        service="chat-api",
        environment="",
    )
    base.update(fields)
    return LlmCall(**base)


def assert_same_call(actual: LlmCall, expected: LlmCall) -> None:
    got = dataclasses.asdict(actual)
    want = dataclasses.asdict(expected)
    got_cost, want_cost = got.pop("cost_usd"), want.pop("cost_usd")
    got_ttft, want_ttft = got.pop("ttft_ms"), want.pop("ttft_ms")
    assert got == want
    if want_cost is None or expected.cost_source == "reported":
        assert got_cost == want_cost  # unpriced stays None; reported cost passes through exactly
    else:
        assert got_cost is not None and math.isclose(got_cost, want_cost, rel_tol=1e-12)
    if want_ttft is None:
        assert got_ttft is None
    else:
        assert got_ttft == pytest.approx(want_ttft, abs=1e-3)


# --- one case per dialect shape --------------------------------------------------------
# (attributes, span status, expected LlmCall fields)

DIALECT_CASES = [
    # ---------------- OpenTelemetry GenAI, current names ----------------
    pytest.param(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 250,
            "gen_ai.usage.cache_read.input_tokens": 300,
            "gen_ai.usage.reasoning.output_tokens": 50,
            "gen_ai.conversation.id": "conv-42",
            "gen_ai.agent.name": "support-agent",
            "gen_ai.response.time_to_first_chunk": 0.25,
            "error.type": "timeout",
            "gen_ai.response.finish_reasons": ["stop", "length"],
        },
        StatusCode.ERROR,
        dict(
            provider="openai",
            model="gpt-4o-2024-08-06",
            operation="chat",
            agent="support-agent",
            session_id="conv-42",
            input_tokens=1200,
            output_tokens=250,
            cached_input_tokens=300,
            reasoning_tokens=50,
            total_tokens=1450,
            # gpt-4o: input 2.50, cached 1.25, output 10.00 (reasoning at output price)
            cost_usd=(900 * 2.50 + 300 * 1.25 + 200 * 10.00 + 50 * 10.00) / M,
            cost_source="computed",
            ttft_ms=250.0,
            is_error=True,
            error_type="timeout",
            finish_reasons=("stop", "length"),
        ),
        id="otel-current-chat",
    ),
    pytest.param(
        {
            "gen_ai.operation.name": "generate_content",
            "gen_ai.provider.name": "gcp.gemini",
            "gen_ai.request.model": "gemini-2.5-flash",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 200,
            "deployment.environment.name": "staging",
        },
        StatusCode.OK,
        dict(
            provider="gcp.gemini",
            model="gemini-2.5-flash",
            operation="chat",
            environment="staging",
            input_tokens=1000,
            output_tokens=200,
            total_tokens=1200,
            cost_usd=(1000 * 0.30 + 200 * 2.50) / M,
            cost_source="computed",
        ),
        id="otel-current-generate_content",
    ),
    pytest.param(
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "search_web",
            "gen_ai.tool.call.arguments": '{"q": "weather"}',
            "gen_ai.conversation.id": "conv-42",
        },
        None,
        dict(
            operation="execute_tool",
            tool="search_web",
            session_id="conv-42",
            tool_args_hash=_blake('{"q": "weather"}'),
        ),
        id="otel-current-tool",
    ),
    pytest.param(
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "research-agent",
            "gen_ai.conversation.id": "conv-9",
        },
        StatusCode.ERROR,
        dict(
            operation="invoke_agent",
            agent="research-agent",
            session_id="conv-9",
            is_error=True,
            error_type="error",
        ),
        id="otel-current-agent-status-error",
    ),
    # ---------------- OpenTelemetry GenAI, deprecated names ----------------
    pytest.param(
        {
            "gen_ai.system": "xai",
            "gen_ai.request.model": "grok-3-mini",
            "gen_ai.usage.prompt_tokens": 600,
            "gen_ai.usage.completion_tokens": 120,
            "gen_ai.conversation.id": "conv-7",
        },
        None,
        dict(
            provider="x_ai",
            model="grok-3-mini",
            operation="chat",
            session_id="conv-7",
            input_tokens=600,
            output_tokens=120,
            total_tokens=720,
            cost_usd=(600 * 0.30 + 120 * 0.50) / M,
            cost_source="computed",
        ),
        id="otel-deprecated-xai",
    ),
    pytest.param(
        {
            "gen_ai.system": "mistralai",
            "gen_ai.request.model": "mistral-small-2503",
            "gen_ai.usage.prompt_tokens": 700,
            "gen_ai.usage.completion_tokens": 100,
        },
        None,
        dict(
            provider="mistral_ai",
            model="mistral-small-2503",
            operation="chat",
            input_tokens=700,
            output_tokens=100,
            total_tokens=800,
            cost_usd=(700 * 0.10 + 100 * 0.30) / M,
            cost_source="computed",
        ),
        id="otel-deprecated-mistralai",
    ),
    # ---------------- OpenLLMetry (Traceloop) legacy ----------------
    pytest.param(
        {
            "gen_ai.system": "anthropic",
            "llm.request.type": "chat",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.model": "claude-sonnet-4-5-20250929",
            "gen_ai.usage.prompt_tokens": 1500,
            "gen_ai.usage.completion_tokens": 300,
            "llm.usage.total_tokens": 1800,
            "gen_ai.usage.cache_read_input_tokens": 600,
            "llm.usage.reasoning_tokens": 100,
            "traceloop.association.properties.session_id": "sess-tl",
            "llm.response.finish_reason": "end_turn",
        },
        None,
        dict(
            provider="anthropic",
            model="claude-sonnet-4-5-20250929",
            operation="chat",
            session_id="sess-tl",
            input_tokens=1500,
            output_tokens=300,
            total_tokens=1800,
            cached_input_tokens=600,
            reasoning_tokens=100,
            # claude-sonnet-4-5: input 3.00, cached 0.30, output 15.00
            cost_usd=(900 * 3.00 + 600 * 0.30 + 200 * 15.00 + 100 * 15.00) / M,
            cost_source="computed",
            finish_reasons=("end_turn",),
        ),
        id="openllmetry-chat",
    ),
    pytest.param(
        {
            "gen_ai.system": "openai",
            "llm.request.type": "completion",
            "gen_ai.request.model": "gpt-3.5-turbo-0125",
            "gen_ai.usage.prompt_tokens": 400,
            "gen_ai.usage.completion_tokens": 40,
        },
        None,
        dict(
            provider="openai",
            model="gpt-3.5-turbo-0125",
            operation="text_completion",
            input_tokens=400,
            output_tokens=40,
            total_tokens=440,
            cost_usd=(400 * 0.50 + 40 * 1.50) / M,
            cost_source="computed",
        ),
        id="openllmetry-completion",
    ),
    pytest.param(
        {
            "gen_ai.system": "openai",
            "llm.request.type": "embedding",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.prompt_tokens": 5000,
            "llm.usage.total_tokens": 5000,
        },
        None,
        dict(
            provider="openai",
            model="text-embedding-3-small",
            operation="embeddings",
            input_tokens=5000,
            output_tokens=0,
            total_tokens=5000,
            cost_usd=5000 * 0.02 / M,
            cost_source="computed",
        ),
        id="openllmetry-embedding",
    ),
    pytest.param(
        {
            "traceloop.span.kind": "agent",
            "traceloop.entity.name": "research-agent",
            "traceloop.association.properties.session_id": "sess-tl",
        },
        None,
        dict(operation="invoke_agent", agent="research-agent", session_id="sess-tl"),
        id="openllmetry-agent",
    ),
    pytest.param(
        {"traceloop.span.kind": "tool", "traceloop.entity.name": "run_sql"},
        None,
        dict(operation="execute_tool", tool="run_sql"),
        id="openllmetry-tool",
    ),
    # ---------------- OpenInference ----------------
    pytest.param(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "mistral-small-latest",
            "llm.provider": "mistralai",
            "llm.system": "mistralai",
            "llm.token_count.prompt": 700,
            "llm.token_count.completion": 100,
            "llm.token_count.total": 800,
            "llm.token_count.prompt_details.cache_read": 200,
            "llm.cost.total": 0.000123,
            "session.id": "sess-oi",
            "llm.finish_reason": "stop",
        },
        None,
        dict(
            provider="mistral_ai",
            model="mistral-small-latest",
            operation="chat",
            session_id="sess-oi",
            input_tokens=700,
            output_tokens=100,
            total_tokens=800,
            cached_input_tokens=200,
            cost_usd=0.000123,
            cost_source="reported",
            finish_reasons=("stop",),
        ),
        id="openinference-llm-reported-cost",
    ),
    pytest.param(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "grok-4",
            "llm.system": "xai",
            "llm.token_count.prompt": 2000,
            "llm.token_count.completion": 500,
            "llm.token_count.prompt_details.cache_read": 1000,
            "llm.token_count.completion_details.reasoning": 300,
        },
        None,
        dict(
            provider="x_ai",
            model="grok-4",
            operation="chat",
            input_tokens=2000,
            output_tokens=500,
            total_tokens=2500,
            cached_input_tokens=1000,
            reasoning_tokens=300,
            # grok-4: input 3.00, cached 0.75, output 15.00
            cost_usd=(1000 * 3.00 + 1000 * 0.75 + 200 * 15.00 + 300 * 15.00) / M,
            cost_source="computed",
        ),
        id="openinference-llm-system-xai",
    ),
    pytest.param(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "us.meta.llama3-1-70b-instruct-v1:0",
            "llm.provider": "aws",
            "llm.system": "meta",
            "llm.token_count.prompt": 1000,
            "llm.token_count.total": 1500,  # completion derived from the total
        },
        None,
        dict(
            provider="aws.bedrock",
            model="us.meta.llama3-1-70b-instruct-v1:0",
            operation="chat",
            input_tokens=1000,
            output_tokens=500,
            total_tokens=1500,
            cost_usd=(1000 * 0.72 + 500 * 0.72) / M,
            cost_source="computed",
        ),
        id="openinference-llama-on-bedrock",
    ),
    pytest.param(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "models/gemini-1.5-pro-002",
            "llm.provider": "google",
            "llm.token_count.prompt": 800,
            "llm.token_count.completion": 80,
        },
        None,
        dict(
            provider="gcp.gemini",
            model="models/gemini-1.5-pro-002",
            operation="chat",
            input_tokens=800,
            output_tokens=80,
            total_tokens=880,
            cost_usd=(800 * 1.25 + 80 * 5.00) / M,
            cost_source="computed",
        ),
        id="openinference-gemini",
    ),
    pytest.param(
        {"openinference.span.kind": "AGENT", "agent.name": "coding-agent", "session.id": "s-1"},
        None,
        dict(operation="invoke_agent", agent="coding-agent", session_id="s-1"),
        id="openinference-agent",
    ),
    pytest.param(
        {
            "openinference.span.kind": "TOOL",
            "tool.name": "read_file",
            "tool_call.function.arguments": '{"path": "/tmp/x"}',
            "session.id": "s-1",
        },
        None,
        dict(
            operation="execute_tool",
            tool="read_file",
            session_id="s-1",
            tool_args_hash=_blake('{"path": "/tmp/x"}'),
        ),
        id="openinference-tool",
    ),
    pytest.param(
        {"openinference.span.kind": "RETRIEVER"},
        None,
        dict(operation="retrieval"),
        id="openinference-retriever",
    ),
    pytest.param(
        {
            "openinference.span.kind": "EMBEDDING",
            "llm.model_name": "text-embedding-3-large",
            "llm.token_count.prompt": 1000,
        },
        None,
        dict(
            provider="openai",
            model="text-embedding-3-large",
            operation="embeddings",
            input_tokens=1000,
            total_tokens=1000,
            cost_usd=1000 * 0.13 / M,
            cost_source="computed",
        ),
        id="openinference-embedding-provider-from-price-table",
    ),
    # ---------------- OpenLIT ----------------
    pytest.param(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "deepseek",
            "gen_ai.request.model": "deepseek-chat",
            "gen_ai.usage.input_tokens": 900,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.total_tokens": 1200,
            "gen_ai.usage.cost": 0.0042,
            "gen_ai.agent.session_id": "ol-sess",
            "error.type": "rate_limited",
        },
        StatusCode.ERROR,
        dict(
            provider="deepseek",
            model="deepseek-chat",
            operation="chat",
            session_id="ol-sess",
            input_tokens=900,
            output_tokens=300,
            total_tokens=1200,
            cost_usd=0.0042,
            cost_source="reported",
            is_error=True,
            error_type="rate_limited",
        ),
        id="openlit-reported-cost",
    ),
    pytest.param(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "o3",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 500,
            "gen_ai.usage.total_tokens": 1500,
            "gen_ai.usage.prompt_tokens_details.cached_tokens": 400,
            "gen_ai.usage.reasoning_tokens": 300,
            "gen_ai.environment": "dev",
            "gen_ai.agent.session_id": "ol-sess",
        },
        None,
        dict(
            provider="openai",
            model="o3",
            operation="chat",
            session_id="ol-sess",
            environment="dev",
            input_tokens=1000,
            output_tokens=500,
            total_tokens=1500,
            cached_input_tokens=400,
            reasoning_tokens=300,
            # o3 from 2025-06-10: input 2.00, cached 0.50, output 8.00
            cost_usd=(600 * 2.00 + 400 * 0.50 + 200 * 8.00 + 300 * 8.00) / M,
            cost_source="computed",
        ),
        id="openlit-computed-cost",
    ),
    # ---------------- Langfuse ----------------
    pytest.param(
        {
            "langfuse.observation.type": "generation",
            "langfuse.observation.model.name": "gpt-4o-mini",
            "langfuse.session.id": "lf-sess",
            "langfuse.observation.usage_details": json.dumps(
                {"input": 800, "output": 200, "total": 1000, "cache_read_input_tokens": 100}
            ),
            "langfuse.observation.cost_details": json.dumps(
                {"input": 0.0001, "output": 0.00021, "total": 0.00031}
            ),
        },
        None,
        dict(
            provider="openai",
            model="gpt-4o-mini",
            operation="chat",
            session_id="lf-sess",
            input_tokens=800,
            output_tokens=200,
            total_tokens=1000,
            cached_input_tokens=100,
            cost_usd=0.00031,
            cost_source="reported",
        ),
        id="langfuse-generation-reported-cost",
    ),
    pytest.param(
        {
            "langfuse.observation.type": "generation",
            "langfuse.observation.model.name": "gpt-4o-mini",
            "langfuse.session.id": "lf-sess",
            "langfuse.observation.usage_details": json.dumps(
                {
                    "input": 800,
                    "output": 200,
                    "input_cached_tokens": 100,
                    "output_reasoning_tokens": 50,
                }
            ),
            "langfuse.observation.level": "ERROR",
            "langfuse.observation.completion_start_time": _iso(START_NS + 400_000_000),
        },
        None,
        dict(
            provider="openai",
            model="gpt-4o-mini",
            operation="chat",
            session_id="lf-sess",
            input_tokens=800,
            output_tokens=200,
            total_tokens=1000,
            cached_input_tokens=100,
            reasoning_tokens=50,
            # gpt-4o-mini: input 0.15, cached 0.075, output 0.60
            cost_usd=(700 * 0.15 + 100 * 0.075 + 150 * 0.60 + 50 * 0.60) / M,
            cost_source="computed",
            ttft_ms=400.0,
            is_error=True,
            error_type="error",
        ),
        id="langfuse-generation-computed-cost-level-error",
    ),
    pytest.param(
        {
            "langfuse.observation.type": "agent",
            "gen_ai.agent.name": "support-agent",
            "langfuse.session.id": "lf-sess",
        },
        None,
        dict(operation="invoke_agent", agent="support-agent", session_id="lf-sess"),
        id="langfuse-agent",
    ),
    pytest.param(
        {"langfuse.observation.type": "tool", "gen_ai.tool.name": "call_api"},
        None,
        dict(operation="execute_tool", tool="call_api"),
        id="langfuse-tool",
    ),
    pytest.param(
        {
            "langfuse.observation.type": "generation",
            "langfuse.observation.model.name": "acme-private-llm",
            "langfuse.observation.usage_details": json.dumps({"input": 10, "output": 5}),
        },
        None,
        dict(
            model="acme-private-llm",
            operation="chat",
            input_tokens=10,
            output_tokens=5,
            total_tokens=15,
        ),
        id="langfuse-unknown-model-unpriced",
    ),
]


@pytest.mark.parametrize(("attributes", "status", "fields"), DIALECT_CASES)
def test_dialect_normalizes_every_field(encoding, attributes, status, fields):
    call, span = one_call(SpanSpec(attributes, status=status, status_description="boom"), encoding)
    assert_same_call(call, expected_call(span, **fields))


def test_ids_are_lowercase_hex_of_the_real_span(encoding):
    call, span = one_call({"gen_ai.request.model": "gpt-4o"}, encoding)
    assert call.trace_id == trace_hex(span) == TRACE_HEX
    assert call.span_id == span_hex(span)
    assert call.parent_span_id == PARENT_HEX
    for value in (call.trace_id, call.span_id, call.parent_span_id):
        assert value == value.lower()
        bytes.fromhex(value)
    assert len(call.trace_id) == 32 and len(call.span_id) == 16


def test_root_span_has_empty_parent_id(encoding):
    call, span = one_call(SpanSpec({"gen_ai.request.model": "gpt-4o"}, child=False), encoding)
    assert call.parent_span_id == ""
    assert call.trace_id == trace_hex(span) and call.span_id == span_hex(span)


@pytest.mark.parametrize(
    ("start_ns", "end_ns", "duration_ms"),
    [
        (START_NS, START_NS + 1_500_000_000, 1500.0),
        (START_NS, START_NS + 1, 0.000001),
        (START_NS, START_NS, 0.0),
        (START_NS + 123_456_789, START_NS + 2 * 123_456_789, 123.456789),
    ],
)
def test_duration_and_event_time(encoding, start_ns, end_ns, duration_ms):
    call, _ = one_call(
        SpanSpec({"gen_ai.request.model": "gpt-4o"}, start_ns=start_ns, end_ns=end_ns), encoding
    )
    assert call.end_ns == end_ns
    assert call.duration_ms == pytest.approx(duration_ms, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    "variant", ["upper", "base64"], ids=["uppercase-hex", "protobuf-json-printer-base64"]
)
def test_json_ids_in_other_spellings_come_out_as_lowercase_hex(variant):
    value, spans = record({"gen_ai.request.model": "gpt-4o"}, encoding="otlp_json")
    data = json.loads(value)
    span_json = data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    for key in ("traceId", "spanId", "parentSpanId"):
        if variant == "upper":
            span_json[key] = span_json[key].upper()
        else:
            span_json[key] = base64.b64encode(bytes.fromhex(span_json[key])).decode()
    result = decode(json.dumps(data).encode())
    (call,) = result.calls
    assert call.trace_id == TRACE_HEX
    assert call.span_id == span_hex(spans[0])
    assert call.parent_span_id == PARENT_HEX


# --- provider and operation mapping ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("xai", "x_ai"),
        ("x_ai", "x_ai"),
        ("mistralai", "mistral_ai"),
        ("mistral", "mistral_ai"),
        ("mistral_ai", "mistral_ai"),
        ("google", "gcp.gemini"),
        ("gemini", "gcp.gemini"),
        ("vertexai", "gcp.vertex_ai"),
        ("vertex_ai", "gcp.vertex_ai"),
        ("az.ai.openai", "azure.ai.openai"),
        ("az.ai.inference", "azure.ai.inference"),
        ("azure", "azure.ai.openai"),
        ("aws", "aws.bedrock"),
        ("bedrock", "aws.bedrock"),
        ("amazon", "aws.bedrock"),
        ("deepseek", "deepseek"),
        (" OpenAI ", "openai"),
        ("XAI", "x_ai"),
    ],
)
@pytest.mark.parametrize(
    "key", ["gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"]
)
def test_provider_spellings_are_normalized(encoding, key, raw, normalized):
    call, _ = one_call({key: raw, "gen_ai.request.model": "acme-model"}, encoding)
    assert call.provider == normalized


@pytest.mark.parametrize(
    ("attributes", "operation"),
    [
        ({"gen_ai.operation.name": "chat"}, "chat"),
        ({"gen_ai.operation.name": "generate_content"}, "chat"),
        ({"gen_ai.operation.name": "text_completion"}, "text_completion"),
        ({"gen_ai.operation.name": "embeddings"}, "embeddings"),
        ({"gen_ai.operation.name": "execute_tool"}, "execute_tool"),
        ({"gen_ai.operation.name": "invoke_agent"}, "invoke_agent"),
        ({"gen_ai.operation.name": "retrieval"}, "retrieval"),
        ({"gen_ai.operation.name": "create_agent"}, "other"),
        ({"openinference.span.kind": "LLM"}, "chat"),
        ({"openinference.span.kind": "llm"}, "chat"),
        ({"openinference.span.kind": "EMBEDDING"}, "embeddings"),
        ({"openinference.span.kind": "TOOL"}, "execute_tool"),
        ({"openinference.span.kind": "AGENT"}, "invoke_agent"),
        ({"openinference.span.kind": "RETRIEVER"}, "retrieval"),
        ({"openinference.span.kind": "CHAIN"}, "other"),
        ({"llm.request.type": "chat"}, "chat"),
        ({"llm.request.type": "completion"}, "text_completion"),
        ({"llm.request.type": "embedding"}, "embeddings"),
        ({"llm.request.type": "rerank"}, "other"),
        ({"traceloop.span.kind": "agent"}, "invoke_agent"),
        ({"traceloop.span.kind": "tool"}, "execute_tool"),
        ({"traceloop.span.kind": "workflow"}, "other"),
        ({"langfuse.observation.type": "generation"}, "chat"),
        ({"langfuse.observation.type": "embedding"}, "embeddings"),
        ({"langfuse.observation.type": "agent"}, "invoke_agent"),
        ({"langfuse.observation.type": "tool"}, "execute_tool"),
        ({"langfuse.observation.type": "retriever"}, "retrieval"),
        ({"langfuse.observation.type": "span"}, "other"),
        # gen_ai.operation.name beats every other dialect's kind
        (
            {
                "gen_ai.operation.name": "embeddings",
                "openinference.span.kind": "LLM",
                "llm.request.type": "chat",
                "langfuse.observation.type": "tool",
            },
            "embeddings",
        ),
        ({"openinference.span.kind": "TOOL", "llm.request.type": "chat"}, "execute_tool"),
        # no declared operation: a model or tokens make it an LLM call
        ({"gen_ai.request.model": "acme"}, "chat"),
        ({"gen_ai.usage.input_tokens": 5}, "chat"),
        ({"gen_ai.provider.name": "openai"}, "other"),
    ],
)
def test_operation_mapping(encoding, attributes, operation):
    call, _ = one_call(attributes, encoding)
    assert call.operation == operation


# --- precedence when several dialects are present at once --------------------------------

PRECEDENCE = [
    (
        "input_tokens",
        ["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"],
        lambda i: 100 + i,
        lambda v: v,
    ),
    (
        "output_tokens",
        [
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
        ],
        lambda i: 200 + i,
        lambda v: v,
    ),
    (
        "total_tokens",
        ["gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total"],
        lambda i: 300 + i,
        lambda v: v,
    ),
    (
        "cached_input_tokens",
        [
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_read_input_tokens",
            "llm.token_count.prompt_details.cache_read",
            "gen_ai.usage.prompt_tokens_details.cached_tokens",
        ],
        lambda i: 40 + i,
        lambda v: v,
    ),
    (
        "reasoning_tokens",
        [
            "gen_ai.usage.reasoning.output_tokens",
            "gen_ai.usage.reasoning_tokens",
            "llm.usage.reasoning_tokens",
            "llm.token_count.completion_details.reasoning",
            "gen_ai.usage.completion_tokens_details.reasoning_tokens",
        ],
        lambda i: 50 + i,
        lambda v: v,
    ),
    (
        "cost_usd",
        ["llm.cost.total", "gen_ai.usage.cost", "gen_ai.token.cost.total"],
        lambda i: 0.5 / 2**i,
        lambda v: v,
    ),
    (
        "provider",
        ["gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"],
        lambda i: ["openai", "anthropic", "cohere", "groq"][i],
        lambda v: v,
    ),
    (
        "model",
        [
            "gen_ai.response.model",
            "llm.response.model_name",
            "gen_ai.request.model",
            "llm.model_name",
            "llm.request.model_name",
            "langfuse.observation.model.name",
        ],
        lambda i: f"acme-model-{i}",
        lambda v: v,
    ),
    ("agent", ["gen_ai.agent.name", "agent.name"], lambda i: f"agent-{i}", lambda v: v),
    (
        "tool",
        ["gen_ai.tool.name", "tool.name", "tool_call.function.name"],
        lambda i: f"tool-{i}",
        lambda v: v,
    ),
    (
        "session_id",
        [
            "gen_ai.conversation.id",
            "langfuse.session.id",
            "session.id",
            "gen_ai.agent.session_id",
            "traceloop.association.properties.session_id",
        ],
        lambda i: f"sess-{i}",
        lambda v: v,
    ),
    ("error_type", ["error.type", "exception.type"], lambda i: f"Err{i}", lambda v: v),
    (
        "finish_reasons",
        [
            "gen_ai.response.finish_reasons",
            "gen_ai.response.finish_reason",
            "llm.response.finish_reason",
            "llm.finish_reason",
        ],
        lambda i: f"reason-{i}",
        lambda v: (v,),
    ),
    (
        "environment",
        [
            "deployment.environment.name",
            "deployment.environment",
            "langfuse.environment",
            "gen_ai.environment",
        ],
        lambda i: f"env-{i}",
        lambda v: v,
    ),
]

PRECEDENCE_CASES = [
    pytest.param(field, keys, value, expect, skip, id=f"{field}-from-{keys[skip]}")
    for field, keys, value, expect in PRECEDENCE
    for skip in range(len(keys))
]


@pytest.mark.parametrize(("field", "keys", "value", "expect", "skip"), PRECEDENCE_CASES)
def test_first_key_in_precedence_list_wins(encoding, field, keys, value, expect, skip):
    """All keys from ``skip`` on are present with different values: keys[skip] wins."""
    attributes = {"gen_ai.operation.name": "chat"}
    attributes.update({key: value(i) for i, key in enumerate(keys) if i >= skip})
    call, _ = one_call(SpanSpec(attributes), encoding, resource={"service.name": "s"})
    assert getattr(call, field) == expect(value(skip))
    if field == "cost_usd":
        assert call.cost_source == "reported"


@pytest.mark.parametrize(
    ("attributes", "field", "expected"),
    [
        # an empty string falls through to the next key
        ({"gen_ai.conversation.id": "", "session.id": "s-2"}, "session_id", "s-2"),
        ({"gen_ai.response.model": "", "gen_ai.request.model": "gpt-4o"}, "model", "gpt-4o"),
        ({"gen_ai.provider.name": "", "gen_ai.system": "xai"}, "provider", "x_ai"),
        # a zero is a value, not a missing key
        ({"gen_ai.usage.input_tokens": 0, "gen_ai.usage.prompt_tokens": 9}, "input_tokens", 0),
        # span attributes beat the Langfuse JSON blobs
        (
            {
                "gen_ai.usage.input_tokens": 5,
                "langfuse.observation.usage_details": '{"input": 7, "output": 3}',
            },
            "input_tokens",
            5,
        ),
        (
            {
                "gen_ai.usage.input_tokens": 5,
                "langfuse.observation.usage_details": '{"input": 7, "output": 3}',
            },
            "output_tokens",
            3,
        ),
        (
            {"gen_ai.usage.cost": 0.25, "langfuse.observation.cost_details": '{"total": 0.75}'},
            "cost_usd",
            0.25,
        ),
        # the response model beats the request model of any dialect
        (
            {"gen_ai.request.model": "gpt-4o", "llm.response.model_name": "gpt-4o-2024-11-20"},
            "model",
            "gpt-4o-2024-11-20",
        ),
        ({"langfuse.observation.model.name": "a", "llm.model_name": "b"}, "model", "b"),
        # explicit names beat the traceloop entity name
        (
            {
                "traceloop.span.kind": "agent",
                "traceloop.entity.name": "entity",
                "gen_ai.agent.name": "explicit",
            },
            "agent",
            "explicit",
        ),
        (
            {
                "traceloop.span.kind": "tool",
                "traceloop.entity.name": "entity",
                "tool.name": "explicit",
            },
            "tool",
            "explicit",
        ),
        # the entity name is an agent only for kind=agent, a tool only for kind=tool
        ({"traceloop.span.kind": "workflow", "traceloop.entity.name": "entity"}, "agent", ""),
        ({"traceloop.span.kind": "workflow", "traceloop.entity.name": "entity"}, "tool", ""),
        ({"traceloop.span.kind": "agent", "traceloop.entity.name": "entity"}, "tool", ""),
        # derived token sides from a total
        ({"llm.token_count.completion": 30, "llm.token_count.total": 100}, "input_tokens", 70),
        (
            {"langfuse.observation.usage_details": '{"input": 100, "total": 150}'},
            "output_tokens",
            50,
        ),
        ({"gen_ai.usage.input_tokens": 100, "gen_ai.usage.total_tokens": 60}, "output_tokens", 0),
        # no total: input + output
        ({"gen_ai.usage.input_tokens": 11, "gen_ai.usage.output_tokens": 22}, "total_tokens", 33),
        # TTFT in seconds, as a number or a string
        ({"gen_ai.response.time_to_first_chunk": 1.5}, "ttft_ms", 1500.0),
        ({"gen_ai.response.time_to_first_chunk": "0.125"}, "ttft_ms", 125.0),
        ({"gen_ai.response.time_to_first_chunk": -1.0}, "ttft_ms", None),
        ({"gen_ai.response.time_to_first_chunk": "soon"}, "ttft_ms", None),
    ],
)
def test_field_details(encoding, attributes, field, expected):
    attributes = {"gen_ai.operation.name": "chat", **attributes}
    call, _ = one_call(attributes, encoding)
    assert getattr(call, field) == expected


def test_reported_cost_beats_computed_cost(encoding):
    attributes = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1_000_000,
        "llm.cost.total": 0.01,
    }
    call, _ = one_call(attributes, encoding)
    assert call.cost_usd == 0.01 and call.cost_source == "reported"
    del attributes["llm.cost.total"]
    call, _ = one_call(attributes, encoding)
    assert call.cost_usd == pytest.approx(2.50) and call.cost_source == "computed"


def test_reported_zero_cost_is_kept_not_recomputed(encoding):
    call, _ = one_call(
        {
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.cost": 0.0,
        },
        encoding,
    )
    assert call.cost_usd == 0.0 and call.cost_source == "reported"


@pytest.mark.parametrize(
    ("status", "attributes", "is_error", "error_type"),
    [
        (None, {}, False, ""),
        (StatusCode.OK, {}, False, ""),
        (StatusCode.UNSET, {}, False, ""),
        (StatusCode.ERROR, {}, True, "error"),
        (StatusCode.ERROR, {"error.type": "timeout"}, True, "timeout"),
        (None, {"error.type": "rate_limited"}, True, "rate_limited"),
        (None, {"exception.type": "ValueError"}, True, "ValueError"),
        (None, {"error.type": ""}, False, ""),
        (None, {"langfuse.observation.level": "ERROR"}, True, "error"),
        (None, {"langfuse.observation.level": "error"}, True, "error"),
        (None, {"langfuse.observation.level": "WARNING"}, False, ""),
    ],
)
def test_error_from_status_error_type_and_level(encoding, status, attributes, is_error, error_type):
    call, _ = one_call(
        SpanSpec({"gen_ai.request.model": "gpt-4o", **attributes}, status=status), encoding
    )
    assert call.is_error is is_error
    assert call.error_type == error_type


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["stop"], ("stop",)),
        (["stop", "length", "tool_calls"], ("stop", "length", "tool_calls")),
        ("stop", ("stop",)),
    ],
)
def test_finish_reasons(encoding, value, expected):
    call, _ = one_call(
        {"gen_ai.request.model": "gpt-4o", "gen_ai.response.finish_reasons": value}, encoding
    )
    assert call.finish_reasons == expected


# --- tenant, service, environment ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant_keys", "resource", "span_attrs", "tenant"),
    [
        (("tenant.id",), {"tenant.id": "res-t"}, {}, "res-t"),
        (("tenant.id",), {}, {"tenant.id": "span-t"}, "span-t"),
        (("tenant.id",), {"tenant.id": "res-t"}, {"tenant.id": "span-t"}, "res-t"),
        (("tenant.id",), {"tenant.id": ""}, {"tenant.id": "span-t"}, "span-t"),
        (("tenant.id",), {}, {}, "default"),
        (("tenant.id",), {"org.id": "o"}, {}, "default"),
        # custom keys: the first key that has a value anywhere wins
        (("org.id", "tenant.id"), {"tenant.id": "t", "org.id": "o"}, {}, "o"),
        (("org.id", "tenant.id"), {"tenant.id": "t"}, {}, "t"),
        (("org.id", "tenant.id"), {"tenant.id": "t"}, {"org.id": "span-o"}, "span-o"),
        (("tenant.id", "org.id"), {"org.id": "o"}, {"tenant.id": "span-t"}, "span-t"),
        (("org.id", "tenant.id"), {}, {}, "default"),
        ((), {"tenant.id": "t"}, {}, "default"),
        (("tenant.id",), {"tenant.id": 42}, {}, "42"),
    ],
)
def test_tenant(encoding, tenant_keys, resource, span_attrs, tenant):
    call, _ = one_call(
        {"gen_ai.request.model": "gpt-4o", **span_attrs},
        encoding,
        resource={"service.name": "svc", **resource},
        decoder=make_decoder(tenant_keys=tenant_keys),
    )
    assert call.tenant == tenant
    assert call.service == "svc"


@pytest.mark.parametrize(
    ("resource", "span_attrs", "service", "environment"),
    [
        ({"service.name": "a", "deployment.environment.name": "prod"}, {}, "a", "prod"),
        ({"service.name": "a", "deployment.environment": "qa"}, {}, "a", "qa"),
        (
            {"deployment.environment.name": "prod"},
            {"deployment.environment.name": "dev"},
            "",
            "prod",
        ),
        ({}, {"langfuse.environment": "lf-env"}, "", "lf-env"),
        ({}, {}, "", ""),
    ],
)
def test_service_and_environment(encoding, resource, span_attrs, service, environment):
    call, _ = one_call(
        {"gen_ai.request.model": "gpt-4o", **span_attrs}, encoding, resource=resource
    )
    assert call.service == service
    assert call.environment == environment
    assert call.tenant == "default"


def test_each_resource_of_a_record_keeps_its_own_tenant_and_service(encoding):
    a = make_spans(
        {"gen_ai.request.model": "gpt-4o"}, resource={"service.name": "svc-a", "tenant.id": "ta"}
    )
    b = make_spans(
        {"gen_ai.request.model": "gpt-4o"},
        {"http.request.method": "GET"},
        resource={"service.name": "svc-b", "tenant.id": "tb"},
    )
    result = decode(encode(a + b, encoding), headers=headers_for(encoding))
    by_span = {c.span_id: c for c in result.calls}
    assert set(by_span) == {span_hex(a[0]), span_hex(b[0])}
    assert (by_span[span_hex(a[0])].tenant, by_span[span_hex(a[0])].service) == ("ta", "svc-a")
    assert (by_span[span_hex(b[0])].tenant, by_span[span_hex(b[0])].service) == ("tb", "svc-b")
    assert result.counters.spans == 3
    assert result.counters.skipped_non_genai == 1


# --- non-GenAI spans and missing dimensions ------------------------------------------------


@pytest.mark.parametrize(
    "attributes",
    [
        {"http.request.method": "GET", "url.path": "/v1/users", "http.response.status_code": 200},
        {"session.id": "sess-1"},
        {"error.type": "timeout"},
        {"tool.name": "grep"},
        {"agent.name": "bot"},
        {"langfuse.session.id": "lf"},
        {"traceloop.entity.name": "x", "traceloop.association.properties.session_id": "s"},
        {"deployment.environment.name": "prod"},
        {"exception.type": "ValueError"},
        {},
    ],
)
@pytest.mark.parametrize("status", [None, StatusCode.ERROR])
def test_non_genai_spans_are_skipped_not_dead_lettered(encoding, attributes, status):
    value, _ = record(SpanSpec(attributes, status=status), encoding=encoding)
    result = decode(value, headers=headers_for(encoding))
    assert result.calls == []
    assert result.dead_letters == []
    c = result.counters
    assert (c.records, c.spans, c.skipped_non_genai, c.normalized) == (1, 1, 1, 0)
    assert (c.dead_lettered_spans, c.dead_lettered_records) == (0, 0)


def test_non_genai_spans_with_bad_times_are_still_just_skipped(encoding):
    value, _ = record(
        SpanSpec({"http.request.method": "GET"}, start_ns=END_NS + 5, end_ns=END_NS),
        encoding=encoding,
    )
    result = decode(value, headers=headers_for(encoding))
    assert result.dead_letters == [] and result.counters.skipped_non_genai == 1


def test_mixed_record_counts(encoding):
    value, spans = record(
        {"http.request.method": "GET"},
        {"gen_ai.request.model": "gpt-4o"},
        {"session.id": "s"},
        {"openinference.span.kind": "TOOL", "tool.name": "t"},
        encoding=encoding,
    )
    result = decode(value, headers=headers_for(encoding))
    assert [c.span_id for c in result.calls] == [span_hex(spans[1]), span_hex(spans[3])]
    c = result.counters
    assert (c.spans, c.normalized, c.skipped_non_genai, c.dead_lettered_spans) == (4, 2, 2, 0)


def test_missing_dimensions_are_empty_strings_not_none(encoding):
    call, _ = one_call(
        {"gen_ai.usage.input_tokens": 3}, encoding, resource={}, decoder=make_decoder()
    )
    for f in dataclasses.fields(LlmCall):
        value = getattr(call, f.name)
        if f.name in ("cost_usd", "ttft_ms"):
            assert value is None, f.name  # unpriced / unknown, never a made-up 0
        else:
            assert value is not None, f.name
    for name in (
        "service",
        "environment",
        "provider",
        "model",
        "agent",
        "tool",
        "tool_args_hash",
        "session_id",
        "error_type",
        "cost_source",
    ):
        assert getattr(call, name) == "", name
    assert call.tenant == "default"
    assert call.finish_reasons == ()
    assert (call.input_tokens, call.output_tokens, call.total_tokens) == (3, 0, 3)
    assert (call.cached_input_tokens, call.reasoning_tokens) == (0, 0)


def test_simulator_resource_shape_round_trips(encoding):
    """The resource the simulator writes (service, tenant, environment) is read back."""
    call, _ = one_call(
        {"gen_ai.request.model": "gpt-4o"},
        encoding,
        resource={**RESOURCE, "deployment.environment.name": "prod"},
    )
    assert (call.tenant, call.service, call.environment) == ("acme", "chat-api", "prod")
