"""Hostile input built from real simulated records.

Two kinds of change:

* *odd but valid* records, whose calls must still be counted exactly: 10,000
  extra attributes on a span, a 1 MB prompt attribute (never read), every span of
  a record sharing one span id;
* *bad* records, each of which must land in the dead-letter topic with a reason:
  random bytes, truncated protobuf, broken and deeply nested OTLP/JSON, an empty
  value, protobuf declared as JSON, a 1 MB model name (an attribute that is read),
  a negative token count, spans ending in 1970 and in 2100.

Each bad record holds at most one span, copied from a real GenAI span and then
spoiled, so none of its calls belongs to the ground truth.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

MB = 1 << 20
EXTRA_ATTRIBUTES = 10_000
NESTING = 20_000
JSON_HEADERS = [("content-type", b"application/json")]
T_1970_NS = 1_000_000_000  # 1970-01-01T00:00:01Z
T_2100_NS = 4_102_444_800 * 1_000_000_000  # 2100-01-01T00:00:00Z

ODD_KINDS = ("ten_thousand_attributes", "one_mb_prompt", "duplicate_span_ids")
BAD_KINDS = (
    "random_bytes",
    "truncated_protobuf",
    "broken_json",
    "deeply_nested_json",
    "empty_value",
    "protobuf_declared_json",
    "one_mb_model_name",
    "negative_tokens",
    "ended_in_1970",
    "ends_in_2100",
)


@dataclass
class Hostile:
    records: list[tuple[bytes, list]]
    bad: dict[int, str] = field(default_factory=dict)  #: record index -> bad kind
    odd: dict[str, int] = field(default_factory=dict)  #: odd kind -> records changed


def parse(value: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(value)
    return request


def set_attribute(span, key: str, **value) -> None:
    """Set (replace) a span attribute; ``value`` is one AnyValue field, e.g. string_value."""
    for kv in span.attributes:
        if kv.key == key:
            kv.value.Clear()
            setattr(kv.value, *next(iter(value.items())))
            return
    kv = span.attributes.add(key=key)
    setattr(kv.value, *next(iter(value.items())))


def genai_span(request: ExportTraceServiceRequest):
    """(resource_spans, scope_spans, span) of the first span carrying token counts."""
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                if any(kv.key == "gen_ai.usage.input_tokens" for kv in span.attributes):
                    return rs, ss, span
    return None


def one_span_record(rs, ss, span) -> ExportTraceServiceRequest:
    out = ExportTraceServiceRequest()
    out_rs = out.resource_spans.add(resource=rs.resource, schema_url=rs.schema_url)
    out_ss = out_rs.scope_spans.add(scope=ss.scope)
    out_ss.spans.append(span)
    return out


# --- odd but valid --------------------------------------------------------------------


def ten_thousand_attributes(request: ExportTraceServiceRequest) -> None:
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.extend(KeyValue(key=f"hostile.attribute.{i}") for i in range(EXTRA_ATTRIBUTES))
    for i, kv in enumerate(span.attributes[-EXTRA_ATTRIBUTES:]):
        kv.value.int_value = i


def one_mb_prompt(request: ExportTraceServiceRequest) -> None:
    span = request.resource_spans[0].scope_spans[0].spans[0]
    set_attribute(span, "gen_ai.prompt", string_value="p" * MB)


def duplicate_span_ids(request: ExportTraceServiceRequest) -> None:
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                span.span_id = b"\x0d" * 8


ODD = {
    "ten_thousand_attributes": ten_thousand_attributes,
    "one_mb_prompt": one_mb_prompt,
    "duplicate_span_ids": duplicate_span_ids,
}


# --- bad ------------------------------------------------------------------------------


def truncated(value: bytes, rng: random.Random) -> bytes:
    """A prefix that protobuf refuses (a cut at a field boundary would parse)."""
    for _ in range(100):
        cut = value[: rng.randint(1, len(value) - 1)]
        try:
            parse(cut)
        except DecodeError:
            return cut
    raise AssertionError("no truncation of this record fails to parse")


def deeply_nested_json() -> bytes:
    inner = '{"stringValue":"x"}'
    nested = '{"kvlistValue":{"values":[{"key":"k","value":' * NESTING + inner + "}]}}" * NESTING
    return (
        '{"resourceSpans":[{"resource":{"attributes":[{"key":"deep","value":'
        + nested
        + '}]},"scopeSpans":[]}]}'
    ).encode()


def spoiled_span(value: bytes, kind: str) -> bytes:
    rs, ss, span = genai_span(parse(value))
    span = type(span).FromString(span.SerializeToString())
    if kind == "one_mb_model_name":
        set_attribute(span, "gen_ai.response.model", string_value="m" * MB)
    elif kind == "negative_tokens":
        set_attribute(span, "gen_ai.usage.input_tokens", int_value=-5)
    elif kind == "ended_in_1970":
        span.start_time_unix_nano, span.end_time_unix_nano = T_1970_NS // 2, T_1970_NS
    elif kind == "ends_in_2100":
        span.start_time_unix_nano, span.end_time_unix_nano = T_2100_NS - 10**9, T_2100_NS
    return one_span_record(rs, ss, span).SerializeToString()


def bad_record(kind: str, value: bytes, rng: random.Random) -> tuple[bytes, list]:
    if kind == "random_bytes":
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4000))), []
    if kind == "truncated_protobuf":
        return truncated(value, rng), []
    if kind == "broken_json":
        return b'{"resourceSpans": [ {"resource": ', JSON_HEADERS
    if kind == "deeply_nested_json":
        return deeply_nested_json(), JSON_HEADERS
    if kind == "empty_value":
        return b"", []
    if kind == "protobuf_declared_json":
        return value, JSON_HEADERS
    return spoiled_span(value, kind), []


# --- the mix --------------------------------------------------------------------------


#: Kinds that cost a megabyte each: a handful of each is enough to show they are
#: handled, and keeps the volume a small box can push through Kafka moderate.
HEAVY = {"one_mb_model_name", "deeply_nested_json", "ten_thousand_attributes", "one_mb_prompt"}


def kind_sequence(kinds: tuple[str, ...], count: int, heavy_each: int) -> list[str]:
    """``count`` kinds, round-robin, each heavy kind at most ``heavy_each`` times."""
    out: list[str] = []
    used: dict[str, int] = {}
    while len(out) < count:
        for kind in kinds:
            if len(out) == count:
                break
            if kind in HEAVY and used.get(kind, 0) >= heavy_each:
                continue
            used[kind] = used.get(kind, 0) + 1
            out.append(kind)
    return out


def make_hostile(
    clean: list[tuple[bytes, list]],
    *,
    bad_share: float = 0.10,
    odd_share: float = 0.05,
    heavy_each: int = 10,
    seed: int = 3,
) -> Hostile:
    """The clean records, ``odd_share`` of them made odd, with bad records mixed in
    at random places until they are ``bad_share`` of all records."""
    rng = random.Random(seed)
    out = Hostile([])
    usable = [i for i, (v, _) in enumerate(clean) if genai_span(parse(v)) is not None]
    n_bad = round(len(clean) * bad_share / (1 - bad_share))
    bad_kinds = iter(kind_sequence(BAD_KINDS, n_bad, heavy_each))
    bad_at = set(rng.sample(range(len(clean) + n_bad), n_bad))
    odd_at = sorted(rng.sample(range(len(clean)), round(len(clean) * odd_share)))
    odd_kinds = dict(zip(odd_at, kind_sequence(ODD_KINDS, len(odd_at), heavy_each), strict=True))
    source = iter(range(len(clean)))
    for position in range(len(clean) + n_bad):
        if position in bad_at:
            kind = next(bad_kinds)
            out.bad[position] = kind
            out.records.append(bad_record(kind, clean[rng.choice(usable)][0], rng))
            continue
        index = next(source)
        value, headers = clean[index]
        kind = odd_kinds.get(index)
        if kind is not None:
            request = parse(value)
            ODD[kind](request)
            value = request.SerializeToString()
            out.odd[kind] = out.odd.get(kind, 0) + 1
        out.records.append((value, headers))
    return out


def kinds_summary(hostile: Hostile) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind in hostile.bad.values():
        counts[kind] = counts.get(kind, 0) + 1
    return json.loads(json.dumps(counts))


#: Where the GenAI dialects put prompt and completion text (never read by the pipeline).
PROMPT_KEYS = (
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.prompt.0.content",
    "gen_ai.completion.0.content",
    "input.value",
    "output.value",
    "llm.input_messages.0.message.content",
    "llm.output_messages.0.message.content",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "langfuse.observation.input",
    "langfuse.observation.output",
)


def with_prompt_text(value: bytes, marker: str) -> bytes:
    """Every span of the record carries prompt and completion text holding ``marker``,
    as attributes and as a ``gen_ai.content.prompt`` event (the older convention)."""
    request = parse(value)
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                for key in PROMPT_KEYS:
                    set_attribute(span, key, string_value=f"[{key}] {marker} tell me a secret")
                event = span.events.add(name="gen_ai.content.prompt")
                event.time_unix_nano = span.end_time_unix_nano
                kv = event.attributes.add(key="gen_ai.prompt")
                kv.value.string_value = f"{marker} from an event"
    return request.SerializeToString()


def spoiled_with_prompt(value: bytes, marker: str) -> bytes:
    """A one-span record that is dead-lettered (negative token count) and carries
    prompt text: its bytes go to the dead-letter topic, the text not into headers."""
    return with_prompt_text(spoiled_span(value, "negative_tokens"), marker)
