"""Typed records that travel through the flows.

Everything that crosses a step boundary is one of these slotted
dataclasses: no dicts of dicts travel through the flow. Dimensions that a
span did not carry are empty strings, never ``None``, so that SQL group-bys
and unique keys behave.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The operations every dialect is folded into.
OPERATIONS = (
    "chat",
    "text_completion",
    "embeddings",
    "execute_tool",
    "invoke_agent",
    "retrieval",
    "other",
)


@dataclass(slots=True)
class LlmCall:
    """One normalized GenAI span (or one metric data point folded into a call).

    >>> call = LlmCall(end_ns=1_700_000_000_000_000_000, model="gpt-4o")
    >>> call.tenant, call.cost_usd
    ('default', None)
    """

    end_ns: int  #: event time: span end, nanoseconds since the epoch (UTC)
    duration_ms: float = 0.0
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    tenant: str = "default"
    service: str = ""
    environment: str = ""
    provider: str = ""
    model: str = ""
    operation: str = "other"
    agent: str = ""
    tool: str = ""
    tool_args_hash: str = ""
    session_id: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float | None = None  #: None = no price known (an "unpriced" call)
    cost_source: str = ""  #: "reported" (on the span), "computed" (price table) or ""
    ttft_ms: float | None = None
    is_error: bool = False
    error_type: str = ""
    finish_reasons: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class SourceRef:
    """Where a Kafka record came from; carried so dead letters can name it."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class DeadLetter:
    """A record (or one span of it) that could not be used, and why."""

    reason: str  #: short machine-readable reason, e.g. ``invalid_protobuf``
    detail: str  #: one human-readable line
    value: bytes  #: the original bytes (the whole record, or the offending span)
    source: SourceRef
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class DecodeCounters:
    """How the spans of a batch were accounted for."""

    records: int = 0
    spans: int = 0
    normalized: int = 0
    skipped_non_genai: int = 0
    dead_lettered_spans: int = 0
    dead_lettered_records: int = 0

    def add(self, other: DecodeCounters) -> None:
        self.records += other.records
        self.spans += other.spans
        self.normalized += other.normalized
        self.skipped_non_genai += other.skipped_non_genai
        self.dead_lettered_spans += other.dead_lettered_spans
        self.dead_lettered_records += other.dead_lettered_records


@dataclass(slots=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


@dataclass(slots=True)
class RecordBatch:
    """What one poll of one partition returned."""

    part_id: str  #: ``<topic>-<partition>``, stable across restarts
    records: list[KafkaRecord] = field(default_factory=list)
    caught_up: bool = False
    #: the partition reached the end offset a ``--stop-at-end`` run reads to: no more data
    finished: bool = False
