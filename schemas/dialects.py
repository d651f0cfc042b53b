"""GenAI attribute dialects folded into one :class:`LlmCall`.

Each canonical field has a precedence list of attribute keys, highest
first: the OpenTelemetry GenAI semantic conventions (current names, then
deprecated ones), then OpenLLMetry, OpenInference, OpenLIT and Langfuse.
Decoders keep only the attributes named here (one dict lookup per
attribute), so the per-span work stays small.

Sources: shared/reference/genai-dialects.md (semantic-conventions v1.41.0,
openllmetry semconv_ai, openinference spec, openlit semcov, langfuse docs).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from observatory.schemas.records import LlmCall

# --- precedence lists -------------------------------------------------------

PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
RESPONSE_MODEL = (
    "gen_ai.response.model",
    "llm.response.model_name",
)
REQUEST_MODEL = (
    "gen_ai.request.model",
    "llm.model_name",
    "llm.request.model_name",
    "langfuse.observation.model.name",
)
OPERATION_NAME = "gen_ai.operation.name"
OPENINFERENCE_KIND = "openinference.span.kind"
TRACELOOP_KIND = "traceloop.span.kind"
TRACELOOP_ENTITY = "traceloop.entity.name"
LLM_REQUEST_TYPE = "llm.request.type"
LANGFUSE_TYPE = "langfuse.observation.type"
LANGFUSE_LEVEL = "langfuse.observation.level"
LANGFUSE_USAGE = "langfuse.observation.usage_details"
LANGFUSE_COST = "langfuse.observation.cost_details"
LANGFUSE_COMPLETION_START = "langfuse.observation.completion_start_time"

INPUT_TOKENS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
)
OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
TOTAL_TOKENS = ("gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total")
CACHED_TOKENS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
    "gen_ai.usage.prompt_tokens_details.cached_tokens",
)
REASONING_TOKENS = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
    "gen_ai.usage.completion_tokens_details.reasoning_tokens",
)
COST = ("llm.cost.total", "gen_ai.usage.cost", "gen_ai.token.cost.total")
AGENT = ("gen_ai.agent.name", "agent.name")
TOOL = ("gen_ai.tool.name", "tool.name", "tool_call.function.name")
TOOL_ARGS = (
    "gen_ai.tool.call.arguments",
    "tool_call.function.arguments",
    "tool.parameters",
    "gen_ai.tool.args",
)
SESSION = (
    "gen_ai.conversation.id",
    "langfuse.session.id",
    "session.id",
    "gen_ai.agent.session_id",
    "traceloop.association.properties.session_id",
)
TTFT_SECONDS = ("gen_ai.response.time_to_first_chunk",)
ERROR_TYPE = ("error.type", "exception.type")
FINISH_REASONS = (
    "gen_ai.response.finish_reasons",
    "gen_ai.response.finish_reason",
    "llm.response.finish_reason",
    "llm.finish_reason",
)
ENVIRONMENT = (
    "deployment.environment.name",
    "deployment.environment",
    "langfuse.environment",
    "gen_ai.environment",
)
SERVICE = ("service.name",)

#: Keys whose presence alone makes a span a GenAI span. Generic keys such as
#: ``session.id``, ``tool.name`` or ``error.type`` do not: plain HTTP spans carry them too.
GENAI_SIGNAL_KEYS = frozenset(
    PROVIDER
    + RESPONSE_MODEL
    + REQUEST_MODEL
    + INPUT_TOKENS
    + OUTPUT_TOKENS
    + TOTAL_TOKENS
    + CACHED_TOKENS
    + REASONING_TOKENS
    + COST
    + (
        OPERATION_NAME,
        OPENINFERENCE_KIND,
        TRACELOOP_KIND,
        LLM_REQUEST_TYPE,
        LANGFUSE_TYPE,
        LANGFUSE_USAGE,
        LANGFUSE_COST,
        "gen_ai.agent.name",
        "gen_ai.tool.name",
        "gen_ai.conversation.id",
        "gen_ai.agent.session_id",
    )
)

#: Every span attribute key the normalizer reads.
SPAN_KEYS = frozenset(
    GENAI_SIGNAL_KEYS
    | set(AGENT + TOOL + TOOL_ARGS + SESSION + TTFT_SECONDS + ERROR_TYPE + FINISH_REASONS)
    | set(ENVIRONMENT)
    | {TRACELOOP_ENTITY, LANGFUSE_LEVEL, LANGFUSE_COMPLETION_START}
)

# --- value maps ---------------------------------------------------------------

_OPERATIONS = {
    "chat": "chat",
    "generate_content": "chat",
    "text_completion": "text_completion",
    "embeddings": "embeddings",
    "execute_tool": "execute_tool",
    "invoke_agent": "invoke_agent",
    "retrieval": "retrieval",
}
_OPENINFERENCE_OPS = {
    "LLM": "chat",
    "EMBEDDING": "embeddings",
    "TOOL": "execute_tool",
    "AGENT": "invoke_agent",
    "RETRIEVER": "retrieval",
}
_TRACELOOP_OPS = {"agent": "invoke_agent", "tool": "execute_tool"}
_LLM_REQUEST_TYPES = {
    "chat": "chat",
    "completion": "text_completion",
    "embedding": "embeddings",
    "embeddings": "embeddings",
}
_LANGFUSE_OPS = {
    "generation": "chat",
    "embedding": "embeddings",
    "agent": "invoke_agent",
    "tool": "execute_tool",
    "retriever": "retrieval",
}
#: Provider spellings of the older conventions and of OpenInference, folded
#: into the current ``gen_ai.provider.name`` values.
_PROVIDER_ALIASES = {
    "xai": "x_ai",
    "az.ai.openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "azure": "azure.ai.openai",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "vertexai": "gcp.vertex_ai",
    "vertex_ai": "gcp.vertex_ai",
    "google": "gcp.gemini",
    "gemini": "gcp.gemini",
    "aws": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "amazon": "aws.bedrock",
}


class Reject(Exception):
    """A span that must go to the dead-letter topic, with a short reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True, frozen=True)
class Limits:
    """Sanity bounds; a span outside them is dead-lettered, not guessed at."""

    max_tokens: int = 50_000_000
    max_cost_usd: float = 100_000.0
    max_attribute_bytes: int = 16_384
    #: Longest dimension value (UTF-8 bytes) kept: dimensions are TimescaleDB key
    #: columns, and a unique-index entry must fit in a btree page (2704 bytes).
    max_dimension_bytes: int = 256
    max_past_skew_s: float = 0.0  #: 0 disables the check
    max_future_skew_s: float = 0.0


def _first(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def checked_text(value: Any, field: str, limits: Limits) -> str:
    """A dimension as text that TimescaleDB can store and index, else :class:`Reject`.

    Every dimension (tenant, service, environment, provider, model, agent,
    tool, session id, error type) comes through here, for spans and metric
    points alike, and the native decoder checks the same things in the same
    order (``checked_text`` in ``native/src/span.rs``):

    * longer than ``max_attribute_bytes`` UTF-8 bytes: ``oversized_attribute``;
    * longer than ``max_dimension_bytes``: ``oversized_dimension`` (it becomes
      part of a unique key, and a btree entry holds at most 2704 bytes);
    * holding NUL, which PostgreSQL text cannot store, or a lone surrogate
      (only OTLP/JSON can spell one), which has no UTF-8 form: ``invalid_text``.

    >>> checked_text("gpt-4o", "model", Limits())
    'gpt-4o'
    >>> for text in ("gpt" + chr(0), "m" * 300):
    ...     try:
    ...         checked_text(text, "model", Limits())
    ...     except Reject as reject:
    ...         print(reject.reason, "-", reject.detail)
    invalid_text - model holds a NUL character
    oversized_dimension - model is 300 bytes (max_dimension_bytes is 256)
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    # Cheap first: a string can take at most 4 bytes a character.
    length = len(value)
    if length * 4 > limits.max_dimension_bytes or length * 4 > limits.max_attribute_bytes:
        size = length if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
        if size > limits.max_attribute_bytes:
            raise Reject("oversized_attribute", f"{field} is {size} bytes")
        if size > limits.max_dimension_bytes:
            raise Reject(
                "oversized_dimension",
                f"{field} is {size} bytes (max_dimension_bytes is {limits.max_dimension_bytes})",
            )
    if "\x00" in value:
        raise Reject("invalid_text", f"{field} holds a NUL character")
    if not value.isascii():  # O(1) in CPython
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Reject("invalid_text", f"{field} holds a lone surrogate") from None
    return value


def check_trace_id(trace_id: str, limits: Limits) -> None:
    """A trace id (hex) longer than a dimension may be is rejected.

    OTLP trace ids are 16 bytes, but nothing on the wire enforces it, and the
    hex of a span's trace id is stored (``agent_sessions.trace_id``, exemplars)
    and keys the session of a span without a session id (``trace:<hex>``).
    """
    if len(trace_id) > limits.max_dimension_bytes:
        raise Reject(
            "oversized_dimension",
            f"trace_id is {len(trace_id)} bytes"
            f" (max_dimension_bytes is {limits.max_dimension_bytes})",
        )


_as_text = checked_text


def _as_count(value: Any, field: str, limits: Limits) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise Reject("invalid_token_count", f"{field} is a boolean")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise Reject("invalid_token_count", f"{field}={value[:40]!r} is not a number") from None
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise Reject("invalid_token_count", f"{field}={value} is not a whole number")
        value = int(value)
    if not isinstance(value, int):
        raise Reject("invalid_token_count", f"{field} has type {type(value).__name__}")
    if value < 0 or value > limits.max_tokens:
        raise Reject("invalid_token_count", f"{field}={value} is out of range")
    return value


def _as_cost(value: Any, field: str, limits: Limits) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise Reject("invalid_cost", f"{field} is a boolean")
    try:
        cost = float(value)
    except (TypeError, ValueError):
        raise Reject("invalid_cost", f"{field}={str(value)[:40]!r} is not a number") from None
    if not math.isfinite(cost) or cost < 0 or cost > limits.max_cost_usd:
        raise Reject("invalid_cost", f"{field}={cost} is out of range")
    return cost


def _json_object(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError, RecursionError):
        raise Reject("invalid_attribute", f"{field} is not a JSON object") from None
    if not isinstance(parsed, dict):
        raise Reject("invalid_attribute", f"{field} is not a JSON object")
    return parsed


def _operation(attrs: Mapping[str, Any]) -> str:
    name = attrs.get(OPERATION_NAME)
    if name:
        return _OPERATIONS.get(str(name), "other")
    kind = attrs.get(OPENINFERENCE_KIND)
    if kind:
        return _OPENINFERENCE_OPS.get(str(kind).upper(), "other")
    request_type = attrs.get(LLM_REQUEST_TYPE)
    if request_type:
        return _LLM_REQUEST_TYPES.get(str(request_type), "other")
    kind = attrs.get(TRACELOOP_KIND)
    if kind:
        return _TRACELOOP_OPS.get(str(kind), "other")
    kind = attrs.get(LANGFUSE_TYPE)
    if kind:
        return _LANGFUSE_OPS.get(str(kind), "other")
    return ""


def normalize_provider(value: str) -> str:
    """Fold provider spellings into ``gen_ai.provider.name`` values.

    >>> normalize_provider("xai"), normalize_provider("openai")
    ('x_ai', 'openai')
    """
    value = value.strip().lower()
    return _PROVIDER_ALIASES.get(value, value)


def _finish_reasons(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return (str(value),)


def _ttft_ms(attrs: Mapping[str, Any], start_ns: int, end_ns: int) -> float | None:
    """Time to first token in ms, or None when absent or impossible for this span."""
    ms = None
    seconds = _first(attrs, TTFT_SECONDS)
    if seconds is not None:
        try:
            ms = float(seconds) * 1000.0
        except (TypeError, ValueError):
            return None
    else:
        started = attrs.get(LANGFUSE_COMPLETION_START)
        if not (started and start_ns):
            return None
        try:
            first = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
            if first.tzinfo is None:
                first = first.replace(tzinfo=UTC)
            ms = (first.timestamp() * 1e9 - start_ns) / 1e6
        except (ValueError, OverflowError, OSError):
            return None
    duration_ms = (end_ns - start_ns) / 1e6 if start_ns else None
    if not math.isfinite(ms) or ms < 0 or (duration_ms is not None and ms > duration_ms):
        return None
    return ms


def args_hash(value: Any) -> str:
    """A short stable hash of tool-call arguments (the text itself is never kept)."""
    if value is None or value == "":
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).hexdigest()


def is_genai(attrs: Mapping[str, Any]) -> bool:
    return any(key in GENAI_SIGNAL_KEYS for key in attrs)


def build_call(
    attrs: Mapping[str, Any],
    *,
    end_ns: int,
    start_ns: int,
    trace_id: str,
    span_id: str,
    parent_span_id: str,
    status_error: bool,
    tenant: str,
    service: str,
    environment: str,
    limits: Limits,
) -> LlmCall:
    """Fold the kept span attributes of one GenAI span into an :class:`LlmCall`.

    ``attrs`` holds only keys of :data:`SPAN_KEYS`; values are plain Python
    values (str, int, float, bool, list). Prices are applied later.

    >>> call = build_call(
    ...     {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
    ...      "gen_ai.usage.prompt_tokens": 12, "gen_ai.usage.completion_tokens": 3},
    ...     end_ns=2_000_000_000, start_ns=1_000_000_000, trace_id="ab", span_id="cd",
    ...     parent_span_id="", status_error=False, tenant="acme",
    ...     service="chat-api", environment="", limits=Limits())
    >>> (call.provider, call.model, call.operation, call.input_tokens, call.duration_ms)
    ('openai', 'gpt-4o', 'chat', 12, 1000.0)
    """
    usage = _json_object(attrs.get(LANGFUSE_USAGE), LANGFUSE_USAGE)
    costs = _json_object(attrs.get(LANGFUSE_COST), LANGFUSE_COST)

    model = _first(attrs, RESPONSE_MODEL) or _first(attrs, REQUEST_MODEL)
    operation = _operation(attrs)
    input_tokens = _as_count(_first(attrs, INPUT_TOKENS), "input_tokens", limits)
    output_tokens = _as_count(_first(attrs, OUTPUT_TOKENS), "output_tokens", limits)
    if input_tokens is None:
        input_tokens = _as_count(
            usage.get("input", usage.get("prompt_tokens")), "usage_details.input", limits
        )
    if output_tokens is None:
        output_tokens = _as_count(
            usage.get("output", usage.get("completion_tokens")), "usage_details.output", limits
        )
    total = _as_count(_first(attrs, TOTAL_TOKENS), "total_tokens", limits)
    if total is None:
        total = _as_count(usage.get("total"), "usage_details.total", limits)
    # A dialect that reports only a total and one side lets us derive the other.
    if total is not None:
        if input_tokens is None and output_tokens is not None:
            input_tokens = max(total - output_tokens, 0)
        elif output_tokens is None and input_tokens is not None:
            output_tokens = max(total - input_tokens, 0)
    input_tokens = input_tokens or 0
    output_tokens = output_tokens or 0
    cached = _as_count(_first(attrs, CACHED_TOKENS), "cache_read_tokens", limits)
    if cached is None:
        cached = _as_count(
            usage.get("cache_read_input_tokens", usage.get("input_cached_tokens")),
            "usage_details.cache_read",
            limits,
        )
    reasoning = _as_count(_first(attrs, REASONING_TOKENS), "reasoning_tokens", limits)
    if reasoning is None:
        reasoning = _as_count(
            usage.get("output_reasoning_tokens"), "usage_details.reasoning", limits
        )

    cost = _as_cost(_first(attrs, COST), "cost", limits)
    if cost is None and costs:
        cost = _as_cost(costs.get("total"), "cost_details.total", limits)

    if not operation:
        # A span with a model or token usage and no declared operation is an LLM call.
        operation = "chat" if (model or input_tokens or output_tokens) else "other"

    agent = _first(attrs, AGENT)
    tool = _first(attrs, TOOL)
    entity = attrs.get(TRACELOOP_ENTITY)
    if entity:
        kind = attrs.get(TRACELOOP_KIND)
        if kind == "agent" and not agent:
            agent = entity
        elif kind == "tool" and not tool:
            tool = entity

    error_type = _first(attrs, ERROR_TYPE)
    level_error = str(attrs.get(LANGFUSE_LEVEL, "")).upper() == "ERROR"
    is_error = status_error or bool(error_type) or level_error
    if is_error and not error_type:
        error_type = "error"

    provider = _first(attrs, PROVIDER)
    return LlmCall(
        end_ns=end_ns,
        duration_ms=max(end_ns - start_ns, 0) / 1e6 if start_ns else 0.0,
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        tenant=tenant,
        service=service,
        environment=environment or _as_text(_first(attrs, ENVIRONMENT), "environment", limits),
        provider=normalize_provider(_as_text(provider, "provider", limits)) if provider else "",
        model=_as_text(model, "model", limits).strip(),
        operation=operation,
        agent=_as_text(agent, "agent", limits),
        tool=_as_text(tool, "tool", limits),
        tool_args_hash=args_hash(_first(attrs, TOOL_ARGS)),
        session_id=_as_text(_first(attrs, SESSION), "session_id", limits),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached or 0,
        reasoning_tokens=reasoning or 0,
        total_tokens=total if total is not None else input_tokens + output_tokens,
        cost_usd=cost,
        cost_source="reported" if cost is not None else "",
        ttft_ms=_ttft_ms(attrs, start_ns, end_ns),
        is_error=is_error,
        error_type=_as_text(error_type, "error_type", limits),
        finish_reasons=_finish_reasons(_first(attrs, FINISH_REASONS)),
    )
