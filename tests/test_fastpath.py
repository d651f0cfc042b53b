"""The native fast path (observatory.schemas.fastpath) against the pure Python path.

Every test decodes the same batch twice, with ``operators.ingest.decode_batch``
and with ``FastTraceDecoder.decode_batch``, and requires equal results: the
same partials (every StatsAcc field; costs within 1e-12 relative), session
partials, dead letters (reason, bytes, source, headers), counters, event time.
Most tests also check that the records really went through the native code,
so that a silent fallback to Python cannot make them pass.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import random
import struct
from datetime import UTC, date, datetime
from fractions import Fraction

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData

from observatory.flows.simulate import DIALECTS, Simulator, Summary, make_records
from observatory.operators.ingest import decode_batch
from observatory.schemas import dialects, fastpath
from observatory.schemas.dialects import Limits
from observatory.schemas.otlp import TraceDecoder
from observatory.schemas.pricing import PriceTable
from observatory.schemas.records import KafkaRecord, RecordBatch

pytestmark = pytest.mark.skipif(
    not fastpath.available(),
    reason="observatory.schemas._native is not built (no Rust toolchain when the package "
    "was installed); the pure Python decoder is used",
)

NS = 1_000_000_000
PRICES = PriceTable.bundled()
#: Examples of the random tests (FASTPATH_EXAMPLES=5000 for a long hunt).
EXAMPLES = int(os.environ.get("FASTPATH_EXAMPLES", "250"))
#: 2025-11-24T16:00:00Z, after every valid_from of prices.yaml
START_NS = 1_764_000_000 * NS
END_NS = START_NS + 1_500_000_000
MINUTE = 60 * NS


# --- comparing the two paths ---------------------------------------------------------


def _close(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=1e-12)


def _sketch(s):
    return None if s is None else (s.accuracy, s.bins, s.zeros, s.count)


def assert_same(py, fast) -> None:
    assert (fast.part_id, fast.caught_up) == (py.part_id, py.caught_up)
    assert fast.max_event_ns == py.max_event_ns
    assert fast.counters == py.counters
    assert fast.calls == []
    assert len(fast.dead_letters) == len(py.dead_letters)
    for a, b in zip(py.dead_letters, fast.dead_letters, strict=True):
        assert (b.reason, b.value, b.source, b.headers) == (a.reason, a.value, a.source, a.headers)
    assert fast.partials.keys() == py.partials.keys()
    for key, a in py.partials.items():
        b = fast.partials[key]
        for name in (
            "calls",
            "errors",
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "reasoning_tokens",
            "unpriced_calls",
            "latency_max_ms",
            "exemplars",
        ):
            assert getattr(b, name) == getattr(a, name), (key, name)
        assert _close(b.cost_usd, a.cost_usd), (key, b.cost_usd, a.cost_usd)
        assert _sketch(b.latency) == _sketch(a.latency), key
        assert _sketch(b.ttft) == _sketch(a.ttft), key
    assert fast.sessions.keys() == py.sessions.keys()
    for key, a in py.sessions.items():
        b = fast.sessions[key]
        for name in a.__dataclass_fields__:
            if name in ("cost_usd", "tool_events", "llm_events"):
                continue
            assert getattr(b, name) == getattr(a, name), (key, name)
        assert _close(b.cost_usd, a.cost_usd), (key, b.cost_usd, a.cost_usd)
        assert collections.Counter(b.tool_events) == collections.Counter(a.tool_events)
        if hasattr(a, "llm_events"):
            assert collections.Counter(b.llm_events) == collections.Counter(a.llm_events)


def make_batch(records, part="otlp_spans-3") -> RecordBatch:
    """records: values or (value, headers) pairs."""
    out = []
    for i, rec in enumerate(records):
        value, headers = rec if isinstance(rec, tuple) else (rec, [])
        out.append(KafkaRecord("otlp_spans", 3, 1000 + i, None, value, headers, 0))
    return RecordBatch(part, out, caught_up=bool(len(out) % 2))


def both(decoder: TraceDecoder, records, window_ns: int = MINUTE, *, native: int | None = None):
    """Decode with both paths, require equal results; ``native``: how many
    records must have gone through the native code (None: don't check)."""
    batch = make_batch(records)
    fast = fastpath.FastTraceDecoder(decoder)
    assert fast.native, fast.reason
    got = fast.decode_batch(batch, window_ns)
    want = decode_batch(decoder, batch, window_ns)
    assert_same(want, got)
    if native is not None:
        assert fast.native_records == native, (fast.native_records, fast.python_records)
    return want


def decoder(**kwargs) -> TraceDecoder:
    kwargs.setdefault("prices", PRICES)
    return TraceDecoder(**kwargs)


# --- building records -------------------------------------------------------------------


def set_any(target: AnyValue, value) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, list):
        array = target.array_value
        array.SetInParent()
        for item in value:
            set_any(array.values.add(), item)
    elif isinstance(value, dict):
        kvlist = target.kvlist_value
        kvlist.SetInParent()
        for key, item in value.items():
            kv = kvlist.values.add()
            kv.key = key
            set_any(kv.value, item)
    else:
        raise TypeError(value)


def add_attrs(attributes, attrs) -> None:
    items = attrs.items() if isinstance(attrs, dict) else attrs
    for key, value in items:
        kv = attributes.add()
        kv.key = key
        set_any(kv.value, value)


TRACE_ID = bytes.fromhex("abcdef0123456789abcdef0123456789")


def make_span(
    attrs=(),
    *,
    start=START_NS,
    end=END_NS,
    code=0,
    trace_id=TRACE_ID,
    name="chat gpt-4o",
) -> Span:
    span = Span(
        trace_id=trace_id,
        span_id=b"\x01" * 8,
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
    )
    add_attrs(span.attributes, attrs)
    if code:
        span.status.code = code
        span.status.message = "boom"
    return span


RESOURCE = {"service.name": "chat-api", "tenant.id": "acme"}


def record(*spans, resource=RESOURCE, resources: int = 1) -> bytes:
    data = TracesData()
    for _ in range(resources):
        rs = data.resource_spans.add()
        add_attrs(rs.resource.attributes, resource)
        rs.schema_url = "https://opentelemetry.io/schemas/1.30.0"
        ss = rs.scope_spans.add()
        ss.scope.name = "tests"
        for span in spans:
            ss.spans.add().CopyFrom(span)
    return data.SerializeToString()


def chat(**extra):
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 200,
        "gen_ai.conversation.id": "sess-1",
    }
    for key, value in extra.items():
        key = key.replace("__", ".")
        if value is _DROP:
            attrs.pop(key, None)
        else:
            attrs[key] = value
    return attrs


_DROP = object()


def reasons(result) -> list[str]:
    return [d.reason for d in result.dead_letters]


# --- simulator traffic --------------------------------------------------------------------


def simulated(seed: int, calls: int, dialects_=DIALECTS, minutes: float = 90.0):
    end = 1_764_000_000 * NS
    sim = Simulator(
        calls=calls,
        start_ns=end - int(minutes * MINUTE),
        end_ns=end,
        seed=seed,
        dialects=dialects_,
        prices=PRICES,
        keep_truth=False,
    )
    return sim.generate()


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("encoding", ["otlp_proto", "mixed"])
def test_simulated_traffic_all_dialects(seed, encoding):
    spans = simulated(seed, 1500)
    rng = random.Random(seed)
    records = [
        (value, headers)
        for value, headers, _ in make_records(
            spans, rng, encoding=encoding, max_spans=200, malformed_rate=0.1, summary=Summary()
        )
    ]
    d = decoder()
    for window in (MINUTE, 3600 * NS, 7 * NS):
        # One big batch, and Kafka-sized batches
        both(d, records, window)
        for i in range(0, len(records), 17):
            both(d, records[i : i + 17], window)
    fast = fastpath.FastTraceDecoder(d)
    fast.decode_batch(make_batch(records), MINUTE)
    protobuf = sum(1 for value, headers in records if not headers and value.lstrip()[:1] != b"{")
    assert fast.native_records == protobuf


@pytest.mark.parametrize("dialect", DIALECTS)
def test_each_dialect(dialect):
    spans = simulated(11, 400, dialects_=(dialect,))
    records = [
        value
        for value, _, _ in make_records(
            spans,
            random.Random(5),
            encoding="otlp_proto",
            max_spans=rng_max(dialect),
            malformed_rate=0.0,
            summary=Summary(),
        )
    ]
    result = both(decoder(), records, native=len(records))
    assert result.counters.normalized > 0 and result.partials and result.sessions


def rng_max(dialect: str) -> int:
    return 1 + DIALECTS.index(dialect) * 40  # 1..201 spans a record


def test_small_records_and_many_batches():
    spans = simulated(4, 300)
    records = [
        value
        for value, _, _ in make_records(
            spans,
            random.Random(1),
            encoding="otlp_proto",
            max_spans=3,
            malformed_rate=0.2,
            summary=Summary(),
        )
    ]
    both(decoder(), records)


def test_windows_and_price_days_around_midnight():
    # o3 changed price on 2025-06-10, deepseek-chat on 2025-09-05 and 2025-09-29:
    # calls a few ns around those midnights, in windows that do and do not divide a day.
    spans = []
    for day in (date(2025, 6, 10), date(2025, 9, 5), date(2025, 9, 29)):
        midnight = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * NS
        for delta in (-1_000_000_000, -300, -65, -1, 0, 1, 65, 300, 1_000_000_000):
            for model in ("o3", "deepseek-chat", "gpt-4o"):
                spans.append(
                    make_span(
                        chat(gen_ai__request__model=model, gen_ai__provider__name=_DROP),
                        start=midnight + delta - 10**9,
                        end=midnight + delta,
                    )
                )
    rec = record(*spans)
    for window in (MINUTE, 7 * NS, 3601 * NS, 86400 * NS, 1):
        both(decoder(), [rec], window, native=1)


# --- targeted: every reject reason ------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        (chat(gen_ai__usage__input_tokens=-1), "invalid_token_count"),
        (chat(gen_ai__usage__input_tokens=float("nan")), "invalid_token_count"),
        (chat(gen_ai__usage__input_tokens=float("inf")), "invalid_token_count"),
        (chat(gen_ai__usage__input_tokens=50_000_001), "invalid_token_count"),
        (chat(gen_ai__usage__input_tokens=2**63 - 1), "invalid_token_count"),
        (chat(gen_ai__usage__output_tokens=1e30), "invalid_token_count"),
        (chat(gen_ai__usage__output_tokens=12.5), "invalid_token_count"),
        (chat(gen_ai__usage__output_tokens=True), "invalid_token_count"),
        (chat(gen_ai__usage__output_tokens="twelve"), "invalid_token_count"),
        (chat(gen_ai__usage__output_tokens="-3"), "invalid_token_count"),
        (chat(gen_ai__usage__output_tokens=[1, 2]), "invalid_token_count"),
        (chat(gen_ai__usage__output_tokens={"a": 1}), "invalid_token_count"),
        (chat(gen_ai__usage__total_tokens="1e9"), "invalid_token_count"),
        (chat(gen_ai__usage__cache_read__input_tokens=-5), "invalid_token_count"),
        (chat(gen_ai__usage__reasoning__output_tokens="nan"), "invalid_token_count"),
        (chat(llm__cost__total=-0.5), "invalid_cost"),
        (chat(llm__cost__total=float("nan")), "invalid_cost"),
        (chat(llm__cost__total=float("-inf")), "invalid_cost"),
        (chat(llm__cost__total=1e9), "invalid_cost"),
        (chat(llm__cost__total="cheap"), "invalid_cost"),
        (chat(llm__cost__total=False), "invalid_cost"),
        (chat(llm__cost__total=[0.1]), "invalid_cost"),
        (chat(gen_ai__request__model="m" * 16_385), "oversized_attribute"),
        (chat(gen_ai__request__model="é" * 8_193), "oversized_attribute"),  # bytes, not chars
        (chat(gen_ai__conversation__id="s" * 20_000), "oversized_attribute"),
        (chat(gen_ai__provider__name="p" * 20_000), "oversized_attribute"),
        (chat(gen_ai__agent__name="a" * 20_000), "oversized_attribute"),
        (chat(**{"error.type": "e" * 20_000}), "oversized_attribute"),
        (chat(**{"gen_ai.environment": "e" * 20_000}), "oversized_attribute"),
        # dimensions must fit a TimescaleDB unique key: at most max_dimension_bytes (256)
        (chat(gen_ai__request__model="m" * 257), "oversized_dimension"),
        (chat(gen_ai__request__model="m" * 5_000), "oversized_dimension"),
        (chat(gen_ai__request__model="é" * 129), "oversized_dimension"),  # bytes, not chars
        (chat(gen_ai__request__model=" " * 300 + "gpt-4o"), "oversized_dimension"),  # unstripped
        (chat(gen_ai__response__model="m" * 257), "oversized_dimension"),
        (chat(gen_ai__conversation__id="s" * 257), "oversized_dimension"),
        (chat(gen_ai__provider__name="p" * 257), "oversized_dimension"),
        (chat(gen_ai__agent__name="a" * 257), "oversized_dimension"),
        (chat(gen_ai__tool__name="t" * 257), "oversized_dimension"),
        (chat(**{"error.type": "e" * 257}), "oversized_dimension"),
        (chat(**{"gen_ai.environment": "e" * 257}), "oversized_dimension"),
        (chat(gen_ai__request__model=b"\x01" * 129), "oversized_dimension"),  # hex of bytes
        # ... and hold no NUL: PostgreSQL text cannot
        (chat(gen_ai__request__model="gpt\x00-4o"), "invalid_text"),
        (chat(gen_ai__request__model="\x00"), "invalid_text"),
        (chat(gen_ai__response__model="\x00o3"), "invalid_text"),
        (chat(gen_ai__conversation__id="s\x00"), "invalid_text"),
        (chat(gen_ai__provider__name="open\x00ai"), "invalid_text"),
        (chat(gen_ai__agent__name="a\x00"), "invalid_text"),
        (chat(gen_ai__tool__name="t\x00"), "invalid_text"),
        (chat(**{"error.type": "E\x00"}), "invalid_text"),
        (chat(**{"gen_ai.environment": "prod\x00"}), "invalid_text"),
        (chat(**{"traceloop.span.kind": "agent", "traceloop.entity.name": "\x00"}), "invalid_text"),
        # the first check that fails decides: size before content
        (chat(gen_ai__request__model="\x00" * 257), "oversized_dimension"),
        (chat(gen_ai__request__model="\x00" * 20_000), "oversized_attribute"),
        (chat(gen_ai__request__model="m\x00", gen_ai__agent__name="a" * 257), "invalid_text"),
        (chat(**{"langfuse.observation.usage_details": "{not json"}), "invalid_attribute"),
        (chat(**{"langfuse.observation.usage_details": "[1, 2]"}), "invalid_attribute"),
        (chat(**{"langfuse.observation.usage_details": "12"}), "invalid_attribute"),
        (chat(**{"langfuse.observation.usage_details": ""}), "invalid_attribute"),
        (chat(**{"langfuse.observation.usage_details": 5}), "invalid_attribute"),
        (chat(**{"langfuse.observation.cost_details": [1]}), "invalid_attribute"),
        (chat(**{"langfuse.observation.cost_details": '{"total": -1}'}), "invalid_cost"),
        (
            chat(
                gen_ai__usage__input_tokens=_DROP,
                **{"langfuse.observation.usage_details": '{"input": -4}'},
            ),
            "invalid_token_count",
        ),
        (
            chat(
                gen_ai__usage__input_tokens=_DROP,
                **{"langfuse.observation.usage_details": {"input": 1.5}},
            ),
            "invalid_token_count",
        ),
    ],
)
def test_span_rejects(attrs, reason):
    good = make_span(chat())
    bad = make_span(attrs)
    rec = record(good, bad, good)
    result = both(decoder(), [rec], native=1)
    assert reasons(result) == [reason]


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        ({"service.name": "s" * 16_385, "tenant.id": "acme"}, "oversized_attribute"),
        ({"service.name": "api", "tenant.id": "t" * 16_385}, "oversized_attribute"),
        ({"service.name": "api", "deployment.environment": "x" * 16_385}, "oversized_attribute"),
        ({"service.name": "ü" * 8_200, "tenant.id": "acme"}, "oversized_attribute"),
        ({"service.name": "s" * 257, "tenant.id": "acme"}, "oversized_dimension"),
        ({"service.name": "ü" * 129, "tenant.id": "acme"}, "oversized_dimension"),
        ({"service.name": "api", "tenant.id": "t" * 257}, "oversized_dimension"),
        ({"service.name": "api", "deployment.environment": "x" * 257}, "oversized_dimension"),
        ({"service.name": "api\x00", "tenant.id": "acme"}, "invalid_text"),
        ({"service.name": "api", "tenant.id": "\x00"}, "invalid_text"),
        ({"service.name": "api", "deployment.environment.name": "p\x00"}, "invalid_text"),
        ({"service.name": "api", "tenant.id": "t\x00" * 200}, "oversized_dimension"),
    ],
)
def test_resource_rejects(resource, reason):
    rec = record(make_span(chat()), make_span({"http.method": "GET"}), resource=resource)
    result = both(decoder(), [rec], native=1)
    assert reasons(result) == [reason]
    assert result.counters.skipped_non_genai == 1


@pytest.mark.parametrize(
    ("tenant", "reason"),
    [("t" * 256, None), ("t" * 257, "oversized_dimension"), ("t\x00", "invalid_text"), (7, None)],
)
def test_span_tenant_is_a_dimension(tenant, reason):
    spans = [make_span(chat(**{"tenant.id": tenant})), make_span(chat())]
    result = both(decoder(), [record(*spans, resource={"service.name": "api"})], native=1)
    assert reasons(result) == ([reason] if reason else [])


def test_nul_at_every_position_of_short_and_long_values():
    """The native NUL scan reads words of 4 and 8 bytes: a NUL in every place of
    values of every length up to 40, among bytes like 0x01, 0x80 and 0xff."""
    fillers = ["m", "\x01", "\x7f", "\x80", "\xff", "é", "\u0100", "\U0010ffff"]
    spans, bad = [], 0
    for n in range(0, 41):
        for filler in fillers:
            clean = (filler * n).encode()[:n].decode("utf-8", "ignore")
            spans.append(make_span(chat(gen_ai__agent__name=clean or _DROP)))
            for at in range(len(clean) + 1):
                spans.append(make_span(chat(gen_ai__agent__name=clean[:at] + "\x00" + clean[at:])))
                bad += 1
    result = both(decoder(), [record(*spans)], native=1)
    assert reasons(result) == ["invalid_text"] * bad


def test_dimension_values_at_the_limits_are_kept():
    attrs = chat(
        gen_ai__request__model="m" * 256,
        gen_ai__conversation__id="é" * 128,  # 256 bytes
        gen_ai__agent__name="\x01\x1f\x7f",  # control characters other than NUL are text
        **{"gen_ai.tool.call.arguments": '{"q": "\x00"}'},  # not a dimension: hashed
        **{"gen_ai.response.finish_reasons": ["st\x00p"]},  # not a dimension: not stored
    )
    resource = {"service.name": "s" * 256, "tenant.id": "t" * 256}
    result = both(decoder(), [record(make_span(attrs), resource=resource)], native=1)
    assert reasons(result) == [] and result.counters.normalized == 1


@pytest.mark.parametrize("limit", [0, 3, 31, 32, 64, 255, 256, 257, 1024, 20_000])
def test_dimension_limit_settings(limit):
    spans = [
        make_span(chat(gen_ai__request__model="m" * n, gen_ai__agent__name="é" * (n // 2)))
        for n in (0, 1, 2, 3, 4, 31, 32, 33, 63, 64, 65, 255, 256, 257, 1000)
    ]
    result = both(decoder(limits=Limits(max_dimension_bytes=limit)), [record(*spans)], native=1)
    assert set(reasons(result)) <= {"oversized_dimension"}


@pytest.mark.parametrize("size", [0, 1, 16, 127, 128, 129, 500, 4096])
def test_trace_id_length_is_a_dimension(size):
    """OTLP trace ids are 16 bytes but nothing enforces it; the hex becomes the
    session id (``trace:<hex>``) of a span without one, and is stored."""
    spans = [
        make_span(chat(gen_ai__conversation__id=_DROP), trace_id=b"\x07" * size),
        make_span({"http.method": "GET"}, trace_id=b"\x07" * size),  # skipped before the check
        make_span(chat()),
    ]
    result = both(decoder(), [record(*spans)], native=1)
    assert reasons(result) == (["oversized_dimension"] if size * 2 > 256 else [])
    assert result.counters.skipped_non_genai == 1
    for limit in {2 * size, max(2 * size - 1, 0)}:
        both(decoder(limits=Limits(max_dimension_bytes=limit)), [record(*spans)], native=1)


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        (START_NS, 0, "invalid_timestamp"),
        (0, 0, "invalid_timestamp"),
        (END_NS + 1, END_NS, "invalid_timestamp"),
        (2**64 - 1, END_NS, "invalid_timestamp"),
        (0, END_NS, None),  # no start: duration 0
        (END_NS, END_NS, None),
        (0, 2**64 - 1, None),
    ],
)
def test_times(start, end, reason):
    rec = record(make_span(chat(), start=start, end=end))
    result = both(decoder(), [rec], native=1)
    assert reasons(result) == ([reason] if reason else [])


@pytest.mark.parametrize("past,future", [(3600.0, 0.0), (0.0, 60.0), (600.0, 600.0)])
def test_timestamp_skew_with_injected_clock(past, future):
    now = END_NS / NS
    spans = [
        make_span(chat(), start=END_NS + d - NS, end=END_NS + d)
        for d in (-7200 * NS, -3599 * NS, -601 * NS, 0, 59 * NS, 61 * NS, 601 * NS, 7200 * NS)
    ]
    d = decoder(limits=Limits(max_past_skew_s=past, max_future_skew_s=future), now=lambda: now)
    result = both(d, [record(*spans)], native=1)
    assert "timestamp_skew" in reasons(result)


def test_clock_that_raises_or_returns_odd_types():
    def broken():
        raise RuntimeError("no clock")

    rec = record(make_span(chat()), make_span(chat()))
    limits = Limits(max_past_skew_s=60.0)
    result = both(decoder(limits=limits, now=broken), [rec], native=1)
    assert reasons(result) == ["decode_error"]
    both(decoder(limits=limits, now=lambda: END_NS // NS), [rec], native=1)  # an int
    both(decoder(limits=limits, now=lambda: True), [rec])  # a bool is an int
    both(decoder(limits=limits, now=lambda: "soon"), [rec])  # TypeError in Python


def test_non_genai_spans_are_skipped():
    rec = record(
        make_span({"http.method": "GET", "session.id": "s", "tool.name": "x", "error.type": "E"}),
        make_span({}),
        make_span(chat()),
    )
    result = both(decoder(), [rec], native=1)
    assert result.counters.skipped_non_genai == 2 and result.counters.normalized == 1


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        TracesData().SerializeToString() or b"\x0a\x00",  # a resource without spans
        record(resources=2),
        b"\x0a\x02\x12\x00",  # a scope without spans
    ],
)
def test_empty_records(value):
    result = both(decoder(), [value, record(make_span(chat()))])
    assert reasons(result)[0] == "empty_record"


def _valid_records():
    spans = simulated(9, 60)
    return [
        value
        for value, _, _ in make_records(
            spans,
            random.Random(2),
            encoding="otlp_proto",
            max_spans=30,
            malformed_rate=0.0,
            summary=Summary(),
        )
    ]


def test_truncated_and_random_bytes():
    rng = random.Random(3)
    good = _valid_records()
    values = []
    for value in good[:10]:
        for cut in sorted({1, 2, 3, len(value) // 2, len(value) - 1}):
            values.append(value[:cut])
    for _ in range(100):
        values.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))))
    result = both(decoder(), values)
    assert "invalid_protobuf" in reasons(result)


def _replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, old
    return data.replace(old, new)


@pytest.mark.parametrize(
    "where",
    [
        "span name",
        "attribute key",
        "attribute value",
        "status message",
        "scope name",
        "schema url",
        "event name",
        "link trace state",
        "resource value",
        "kvlist key",
    ],
)
def test_invalid_utf8_in_string_fields(where):
    span = make_span(chat(extra={"kvkey": 1}), code=2)
    span.events.add(name="EVENTNAME")
    span.links.add(trace_id=b"\x02" * 16, span_id=b"\x03" * 8, trace_state="LINKSTATE")
    data = TracesData()
    rs = data.resource_spans.add(schema_url="SCHEMAURL")
    add_attrs(rs.resource.attributes, {"service.name": "RESVALUE"})
    ss = rs.scope_spans.add()
    ss.scope.name = "SCOPENAME"
    ss.spans.append(span)
    value = data.SerializeToString()
    marker = {
        "span name": b"chat gpt-4o",
        "attribute key": b"gen_ai.conversation.id",
        "attribute value": b"sess-1",
        "status message": b"boom",
        "scope name": b"SCOPENAME",
        "schema url": b"SCHEMAURL",
        "event name": b"EVENTNAME",
        "link trace state": b"LINKSTATE",
        "resource value": b"RESVALUE",
        "kvlist key": b"kvkey",
    }[where]
    bad = _replace(value, marker, marker[:-1] + b"\xff")  # same length
    with pytest.raises(DecodeError):
        TracesData().ParseFromString(bad)
    result = both(decoder(), [bad, value], native=2)
    assert reasons(result) == ["invalid_protobuf"]
    surrogate = _replace(value, marker, marker[:-3] + b"\xed\xa0\x80")
    assert reasons(both(decoder(), [surrogate], native=1)) == ["invalid_protobuf"]


def test_invalid_utf8_outside_string_fields_is_fine():
    span = make_span(chat(), trace_id=b"\xff" * 16)
    add_attrs(span.attributes, {"bytes": b"\xff\xfe"})
    result = both(decoder(), [record(span)], native=1)
    assert result.counters.normalized == 1


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _enc_varint(field << 3 | wire)


def _ld(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _enc_varint(len(payload)) + payload


def _in_span(payload: bytes) -> bytes:
    base = make_span(chat()).SerializeToString()
    return _ld(1, _ld(2, _ld(2, base + payload)))


def _nest_arrays(n: int, inner: bytes) -> bytes:
    for _ in range(n):
        inner = _ld(5, _ld(1, inner))
    return inner


@pytest.mark.parametrize(
    "payload",
    [
        _tag(0, 0) + b"\x01",  # field 0
        _tag(5, 6),  # wire type 6
        _tag(5, 7),  # wire type 7
        _tag(6, 0) + b"\xff" * 10 + b"\x01",  # 11-byte varint
        _tag(6, 0) + b"\xff" * 9 + b"\x7f",  # 10-byte varint: fine
        _tag(99, 3) + _tag(5, 0) + b"\x01" + _tag(99, 4),  # unknown group: fine
        _tag(99, 3) + _tag(98, 4),  # mismatched end group
        _tag(99, 4),  # stray end group
        _tag(99, 3),  # unterminated group
        _tag(5, 3) + _tag(5, 4),  # known field as a group: unknown, fine
        _enc_varint(((1 << 29) - 1) << 3),  # largest field number: fine (+ varint below)
        b"\x80\x80\x80\x80\x10\x01",  # tag beyond 32 bits
        b"\x88\x80\x80\x80\x80\x00\x01",  # 6-byte tag
        _tag(7, 1) + b"\x00" * 7,  # short fixed64
        _tag(16, 5) + b"\x00" * 4,  # flags (fixed32): fine
        _tag(5, 2) + b"\x82\x80\x80\x80\x00ab",  # 5-byte length: fine
        _tag(5, 2) + b"\x82\x80\x80\x80\x80\x00ab",  # 6-byte length
        _tag(99, 2) + _enc_varint(1 << 31),  # length beyond the record
        _tag(6, 2) + b"\x01\x80",  # span kind as LEN: unknown, fine
        _tag(15, 0) + b"\x02",  # status as a varint: unknown, fine
        _ld(15, _tag(3, 0) + _enc_varint((1 << 32) + 2)),  # status code 2 (int32 bits)
        _ld(15, _tag(3, 0) + _enc_varint((1 << 64) - 2)),  # status code -2
        _ld(9, _ld(1, b"k") + _ld(2, _nest_arrays(47, _ld(1, b"x")))),  # depth 99: fine
        _ld(9, _ld(1, b"k") + _ld(2, _nest_arrays(48, _ld(1, b"x")))),  # depth 101
        _ld(9, _ld(1, b"k") + _ld(2, _nest_arrays(47, _ld(5, b"")))),  # depth 100: fine
        _ld(9, _ld(1, b"k") + _ld(2, _nest_arrays(47, _ld(5, _ld(1, b""))))),  # 101, empty
        _ld(9, _ld(1, b"k") + _ld(2, _nest_arrays(47, _tag(9, 3) + _tag(9, 4)))),  # group 100
        _ld(9, _ld(1, b"k") + _ld(2, _nest_arrays(47, _tag(9, 3) * 2 + _tag(9, 4) * 2))),
    ],
)
def test_wire_format_edge_cases(payload):
    if payload == _enc_varint(((1 << 29) - 1) << 3):
        payload += b"\x01"
    value = _in_span(payload)
    try:
        TracesData().ParseFromString(value)
        upb_ok = True
    except DecodeError:
        upb_ok = False
    native = fastpath.FastTraceDecoder(decoder())._native
    assert (native.validate(value) is None) == upb_ok
    both(decoder(), [value], native=1)


def test_groups_nested_to_the_depth_limit():
    native = fastpath.FastTraceDecoder(decoder())._native
    for n in (97, 98, 99, 100, 101):
        groups = _tag(99, 3) * n + _tag(99, 4) * n
        for value in (groups, _in_span(groups)):
            try:
                TracesData().ParseFromString(value)
                ok = True
            except DecodeError:
                ok = False
            assert (native.validate(value) is None) == ok, n


def test_merged_and_repeated_fields():
    """upb merges repeated occurrences of a message field and keeps the last scalar."""
    span = make_span(chat()).SerializeToString()
    # trace id, end time and a model given twice; status given twice
    extra = (
        _ld(1, b"\x09" * 16)
        + _tag(8, 1)
        + struct.pack("<Q", END_NS + 5 * NS)
        + _ld(9, _ld(1, b"gen_ai.request.model") + _ld(2, _ld(1, b"o3")))
        + _ld(15, _tag(3, 0) + b"\x02")
        + _ld(15, _ld(2, b"again"))
        # a value given twice in one KeyValue: arrays merge, a string replaces
        + _ld(9, _ld(1, b"gen_ai.agent.name") + _ld(2, _ld(1, b"a")) + _ld(2, _tag(3, 0) + b"\x07"))
        + _ld(9, _ld(1, b"gen_ai.response.model") + _ld(2, _ld(5, b"")) + _ld(2, _ld(5, b"")))
        + _ld(
            9,
            _ld(1, b"gen_ai.response.finish_reasons")
            + _ld(2, _ld(5, b""))
            + _ld(2, _ld(5, _ld(1, b""))),
        )
        + _ld(9, _ld(1, b"gen_ai.usage.total_tokens") + _ld(2, _tag(3, 0) + b"\x05") + _ld(2, b""))
        # string_value_strindex (field 8) makes the value None
        + _ld(9, _ld(1, b"session.id") + _ld(2, _ld(1, b"x") + _tag(8, 0) + b"\x01"))
    )
    resource2 = _ld(1, _ld(1, b"tenant.id") + _ld(2, _ld(1, b"second")))
    value = _ld(
        1,
        _ld(2, _ld(2, span + extra))
        + _ld(1, resource2)
        + _ld(1, _ld(1, _ld(1, b"service.name") + _ld(2, _tag(2, 0) + b"\x01"))),
    )
    TracesData().ParseFromString(value)
    result = both(decoder(), [value], native=1)
    assert result.counters.normalized == 1


def test_sniffing_and_declared_encodings():
    rec = record(make_span(chat()))
    json_like = b"  \n{" + rec
    d = decoder()
    both(d, [(rec, [("content-type", b"application/json")])], native=0)
    both(d, [(rec, [("content-type", b"application/x-protobuf")])], native=1)
    both(d, [(rec, [("otlp.encoding", b"bogus")])], native=1)
    both(d, [(rec, [("content-type", None)])])
    both(d, [(rec, [(b"not-a-str", b"x")])])
    both(d, [json_like, b"{}", b'{"resourceSpans": []}', b" [1]"])
    both(decoder(default_encoding="otlp_json"), [rec])
    both(decoder(default_encoding="otlp_proto"), [rec, b'{"resourceSpans": []}'], native=1)
    # A protobuf whose first entry is 123 bytes long starts with "\n{".
    for size in range(0, 123):
        data = TracesData()
        span = data.resource_spans.add().scope_spans.add().spans.add()
        span.CopyFrom(make_span({"gen_ai.request.model": "o3"}, name="x" * size))
        value = data.SerializeToString()
        if value[:2] == b"\n{":
            both(d, [value])
            break
    else:
        pytest.fail("no record starting with \\n{ found")


def test_oversized_record():
    rec = record(make_span(chat()))
    both(decoder(max_record_bytes=len(rec) - 1), [rec, rec[:5]])


def test_python_fallback_calls_keep_order_in_sessions():
    """JSON records (decoded by Python) and protobuf records mixed in one session."""
    spans = simulated(21, 200)
    records = list(
        make_records(
            spans,
            random.Random(8),
            encoding="mixed",
            max_spans=5,
            malformed_rate=0.0,
            summary=Summary(),
        )
    )
    both(decoder(), [(v, h) for v, h, _ in records])


def tool(name, **extra):
    attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.conversation.id": "sess-1"}
    if name is not None:
        attrs["gen_ai.tool.name"] = name
    attrs.update({k.replace("__", "."): v for k, v in extra.items()})
    return attrs


TOOL_NAMES = [
    "search_web",
    "",
    "x" * 127,
    "x" * 128,
    "x" * 129,
    "é" * 130,  # cut in characters, not bytes
    "a" * 127 + "日本",
    "日本" * 100,
    "😀" * 129,
    None,
]


def tool_spans():
    spans = [make_span(tool(name), name="execute_tool") for name in TOOL_NAMES]
    spans += [
        make_span(tool("run_sql"), code=2),
        make_span(chat(gen_ai__tool__name="not_a_tool_call")),  # an LLM call: no tool key
        make_span({"openinference.span.kind": "TOOL", "tool.name": "y" * 200}),
        make_span({"traceloop.span.kind": "tool", "traceloop.entity.name": "z" * 140}),
        make_span({"gen_ai.operation.name": "invoke_agent", "gen_ai.tool.name": "t"}),
    ]
    return spans


#: Dimensions up to 1 KiB: every tool name of TOOL_NAMES is kept, so the cut is exercised.
WIDE = Limits(max_dimension_bytes=1024)


def test_tool_key_of_the_stats_is_equal_in_both_paths():
    rec = record(*tool_spans())
    result = both(decoder(limits=WIDE), [rec], native=1)
    tools = {key[5] for key, _ in result.partials}
    assert {"search_web", "x" * 128, "é" * 128, "a" * 127 + "日", "😀" * 128} <= tools
    assert {len(t) for t in tools} <= set(range(129))
    by_operation = {(key[4], key[5] == "") for key, _ in result.partials}
    assert ("chat", True) in by_operation and ("invoke_agent", True) in by_operation
    assert ("chat", False) not in by_operation
    for max_attr in (100, 400):
        both(decoder(limits=Limits(max_attribute_bytes=max_attr)), [rec], native=1)


def test_tool_names_longer_than_a_dimension_are_dead_lettered():
    """Within max_dimension_bytes a long tool name is cut to 128 characters in
    the key; beyond it the span is dead-lettered, like any other dimension."""
    result = both(decoder(), [record(*tool_spans())], native=1)
    # "é" * 130, "日本" * 100 and "😀" * 129 are 260, 600 and 516 bytes
    assert reasons(result) == ["oversized_dimension"] * 3
    tools = {key[5] for key, _ in result.partials}
    assert {"search_web", "x" * 128, "a" * 127 + "日", "y" * 128, "z" * 128} <= tools


def test_tool_key_of_calls_the_python_decoder_read():
    """JSON records are decoded in Python and folded into the native accumulators."""
    from google.protobuf import json_format

    data = TracesData()
    data.ParseFromString(record(*tool_spans()))
    as_json = json_format.MessageToJson(data).encode()
    result = both(decoder(limits=WIDE), [as_json, record(*tool_spans())], native=1)
    assert {key[5] for key, _ in result.partials} >= {"search_web", "😀" * 128}
    result = both(decoder(), [as_json, record(*tool_spans())], native=1)
    assert reasons(result) == ["oversized_dimension"] * 6


def test_values_left_to_python_are_exact():
    """Values whose handling needs more of Python than the native code carries
    make the record fall back; results stay equal."""
    cases = [
        chat(gen_ai__request__model=4.5),
        chat(gen_ai__request__model=["a", "b"]),
        chat(gen_ai__request__model=[]),
        chat(gen_ai__request__model={}),
        chat(gen_ai__provider__name="ÖpenAI"),
        chat(gen_ai__provider__name=" OpenAI "),
        chat(gen_ai__provider__name=7),
        chat(gen_ai__provider__name=True),
        chat(gen_ai__provider__name=0),
        chat(gen_ai__operation__name=_DROP, **{"openinference.span.kind": "embeddıng"}),
        chat(gen_ai__operation__name=_DROP, **{"openinference.span.kind": "llm"}),
        chat(gen_ai__usage__input_tokens="1_000"),
        chat(gen_ai__usage__input_tokens=" 12 "),
        chat(gen_ai__usage__input_tokens="١٢"),
        chat(gen_ai__usage__input_tokens="1e3"),
        chat(**{"gen_ai.tool.call.arguments": {"q": 1}}),
        chat(**{"gen_ai.tool.call.arguments": 1.5}),
        chat(**{"gen_ai.tool.call.arguments": 17}),
        chat(**{"gen_ai.tool.call.arguments": False}),
        chat(**{"gen_ai.tool.call.arguments": '{"q": "ü"}'}),
        chat(**{"gen_ai.response.time_to_first_chunk": "0.2"}),
        chat(**{"gen_ai.response.time_to_first_chunk": 2.0}),  # longer than the span
        chat(**{"gen_ai.response.time_to_first_chunk": [1]}),
        chat(**{"langfuse.observation.completion_start_time": "2025-11-24T16:00:00.2Z"}),
        chat(**{"langfuse.observation.completion_start_time": "2025-11-24T16:00:00.200000"}),
        chat(**{"langfuse.observation.completion_start_time": "2025-11-24T17:00:00+01:00"}),
        chat(**{"langfuse.observation.completion_start_time": "20251124T160000Z"}),
        chat(**{"langfuse.observation.completion_start_time": "yesterday"}),
        chat(**{"langfuse.observation.completion_start_time": 1764000000}),
        chat(**{"langfuse.observation.level": "error"}),
        chat(**{"langfuse.observation.level": "ERROR "}),
        chat(**{"langfuse.observation.usage_details": '{"input": 12345678901234567890123}'}),
        chat(**{"langfuse.observation.usage_details": '{"input": "\\ud800"}'}),
        chat(**{"langfuse.observation.usage_details": '{"input": 5, "input": 7}'}),
        chat(**{"langfuse.observation.usage_details": '{"output": NaN}'}),
        chat(**{"langfuse.observation.cost_details": '{"total": 1e400}'}),
        chat(**{"langfuse.observation.cost_details": "{}"}),
        chat(**{"langfuse.observation.cost_details": {"total": 0.25}}),
        chat(**{"traceloop.entity.name": "planner", "traceloop.span.kind": "agent"}),
        chat(**{"error.type": 0}),
        chat(**{"error.type": ""}),
        chat(**{"deployment.environment": 1.5}),
        chat(gen_ai__request__model=["gpt\x00"]),  # str() of a list escapes the NUL
        chat(gen_ai__provider__name="Ö\x00"),
    ]
    rec = [record(make_span(attrs)) for attrs in cases]
    for limits in (Limits(), Limits(max_attribute_bytes=3), Limits(max_dimension_bytes=3)):
        both(decoder(limits=limits), rec)


def test_settings_the_native_code_does_not_reproduce():
    class Custom(TraceDecoder):
        pass

    rec = record(make_span(chat()))
    for d in (
        Custom(prices=PRICES),
        decoder(limits=Limits(max_tokens=2**70)),
        decoder(limits=Limits(max_cost_usd=Fraction(1, 3))),
    ):
        fast = fastpath.FastTraceDecoder(d)
        assert not fast.native and fast.reason
        assert_same(
            decode_batch(d, make_batch([rec]), MINUTE), fast.decode_batch(make_batch([rec]), MINUTE)
        )


def test_json_call_the_native_accumulators_cannot_hold():
    """An OTLP/JSON end time beyond 64 bits: the pure path decodes the batch."""
    span = {
        "traceId": "ab" * 16,
        "spanId": "cd" * 8,
        "startTimeUnixNano": str(2**70 - 10),
        "endTimeUnixNano": str(2**70),
        "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}}],
    }
    value = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()
    both(decoder(), [record(make_span(chat())), value])


def test_window_sizes():
    spans = simulated(5, 200)
    records = [
        v
        for v, _, _ in make_records(
            spans,
            random.Random(3),
            encoding="otlp_proto",
            max_spans=50,
            malformed_rate=0.0,
            summary=Summary(),
        )
    ]
    for window in (1, 999, MINUTE, 86400 * NS, 2**63):
        both(decoder(), records, window)


# --- helpers of the native code, against Python itself ------------------------------------

_native = fastpath._native


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789+-.eE_ \t\n\x0b\x0cinfatyINFATYx١", max_size=12))
def test_float_parsing_matches_python(text):
    got = _native.py_float(text)
    try:
        want = float(text)
    except ValueError:
        want = "invalid"
    if got == "unsupported":
        return
    if isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got)
    else:
        assert got == want and type(got) is type(want)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_float_parsing_round_trips(value):
    for text in (repr(value), f"{value:.17e}", f"{value:.3f}"):
        assert _native.py_float(text) == float(text)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from(["", "Z", "+00:00", "+05:30", "-08:00", "+23:59"]),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
)
def test_iso_timestamps_match_python(moment, zone, timespec):
    text = moment.isoformat(timespec=timespec) + zone
    text = text.replace("Z", "+00:00")
    micros = _native.iso_micros(text)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        want = parsed.timestamp()
    except (OverflowError, ValueError):
        return
    if micros is not None:
        assert micros / 1e6 == want


@pytest.mark.parametrize("size", [0, 1, 8, 127, 128, 129, 255, 256, 1000])
def test_blake2b(size):
    data = bytes(range(256)) * 4
    assert (
        _native.blake2b_hex(data[:size], 8)
        == hashlib.blake2b(data[:size], digest_size=8).hexdigest()
    )


@settings(max_examples=500, deadline=None)
@given(
    st.integers(min_value=1, max_value=2**64 - 1)
    | st.sampled_from(
        [d * 86400 * NS + k for d in (20000, 20250, 20340) for k in (-2, -1, 0, 1, 2, -300, 300)]
    )
)
def test_day_of_an_end_time(end_ns):
    epoch_s = end_ns / 1e9
    day = _native.day_of(end_ns)
    assert day * 86400.0 <= epoch_s < (day + 1) * 86400.0


# --- random attribute sets (hypothesis) -----------------------------------------------------

ALL_KEYS = sorted(
    dialects.SPAN_KEYS
    | {"tenant.id", "team", "service.name", "http.method", "deployment.environment.name"}
)
USAGE_KEYS = [
    "input",
    "output",
    "total",
    "prompt_tokens",
    "completion_tokens",
    "cache_read_input_tokens",
    "input_cached_tokens",
    "output_reasoning_tokens",
]

texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            "chat",
            "embeddings",
            "execute_tool",
            "invoke_agent",
            "LLM",
            "tool",
            "agent",
            "TOOL",
            "generation",
            "completion",
            "openai",
            " OpenAI ",
            "xai",
            "AZURE",
            "error",
            "ERROR",
            "12",
            "0",
            "-5",
            "1e3",
            "2.0",
            "nan",
            "inf",
            "1_0",
            " 7 ",
            "x" * 40,
            "t" * 129,
            "ü" * 130,
            "gpt-4o-2024-08-06",
            "o3",
            "claude-3-5-sonnet-20241022",
            "deepseek-chat",
            "ü",
            "日本",
        ]
    ),
)
#: Dimension values at the edges of what TimescaleDB can store and index:
#: NUL, other control characters, and lengths around the dimension limit (256 bytes).
dimension_hazards = st.sampled_from(
    ["\x00", "gpt\x00-4o", "\x01\x1f", "m" * 256, "m" * 257, "é" * 128, "é" * 129, "😀" * 64]
)
DIMENSION_KEYS = sorted(
    {
        *dialects.PROVIDER,
        *dialects.RESPONSE_MODEL,
        *dialects.REQUEST_MODEL,
        *dialects.AGENT,
        *dialects.TOOL,
        *dialects.SESSION,
        *dialects.ERROR_TYPE,
        *dialects.ENVIRONMENT,
        dialects.TRACELOOP_ENTITY,
        "tenant.id",
        "team",
    }
)
numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, 2, 5, 1000, 49_999_999, 50_000_000, 50_000_001]),
    st.floats(width=64),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 3.0, 0.0025, 1e300, float("nan"), float("inf")]),
)
scalars = st.one_of(texts, numbers, st.booleans(), st.binary(max_size=6), st.none())
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from([*USAGE_KEYS, "x"]), inner, max_size=4)
    ),
    max_leaves=6,
)
json_texts = st.one_of(
    st.dictionaries(
        st.sampled_from(USAGE_KEYS),
        st.one_of(
            st.integers(-5, 10**6),
            st.floats(allow_nan=True, width=64),
            texts,
            st.none(),
            st.booleans(),
            st.lists(st.integers(), max_size=2),
        ),
        max_size=5,
    ).map(json.dumps),
    st.sampled_from(
        [
            '{"total": 0.5}',
            '{"total": "0.5"}',
            "{",
            "[]",
            "null",
            " {} ",
            '{"a":1,}',
            '{"input": 1.0e2}',
            '{"input": -0}',
            '{"total": Infinity}',
        ]
    ),
    # JSON-ish noise: the native parser must fail exactly where json.loads does
    st.text(alphabet='{}[]",: 0123456789.eE+-tfnrulasINyi\\/u\t', max_size=24),
    st.text(alphabet='0123456789.eE+- "', max_size=10).map(lambda t: '{"input": ' + t + "}"),
)
iso_texts = st.sampled_from(
    [
        "2025-11-24T16:00:00.5Z",
        "2025-11-24T16:00:00Z",
        "2025-11-24T15:59:59Z",
        "2025-11-24T16:00:01.000001+00:00",
        "2025-11-24 16:00:00",
        "2025-11-24T16:00:00.5",
        "2025-02-30T00:00:00Z",
        "2025-11-24T17:00:00.25+01:00",
        "nonsense",
    ]
)
any_value = st.one_of(values, json_texts, iso_texts)
attr_lists = st.lists(st.tuples(st.sampled_from(ALL_KEYS), any_value), max_size=10)
resource_attrs = st.lists(
    st.tuples(
        st.sampled_from(["service.name", "tenant.id", "team", *dialects.ENVIRONMENT, "host"]),
        values | dimension_hazards,
    ),
    max_size=5,
)
times = st.one_of(
    st.sampled_from([0, 1, START_NS, END_NS, END_NS + 1, START_NS - 1, 2**64 - 1]),
    st.integers(min_value=0, max_value=2**64 - 1),
)


@st.composite
def spans(draw):
    attrs = draw(attr_lists)
    if draw(st.integers(0, 3)) == 0:
        attrs.append((draw(st.sampled_from(DIMENSION_KEYS)), draw(dimension_hazards)))
    if draw(st.booleans()):  # mostly GenAI spans
        attrs.insert(0, ("gen_ai.request.model", draw(st.sampled_from(["gpt-4o", "o3", ""]))))
    start, end = draw(st.sampled_from([(START_NS, END_NS), None])) or (draw(times), draw(times))
    return make_span(
        attrs,
        start=start,
        end=end,
        code=draw(st.sampled_from([0, 0, 1, 2])),
        trace_id=draw(
            st.sampled_from([b"", b"\x00" * 16, b"\xab" * 16, b"\x01\x02", b"\x07" * 129])
        ),
    )


@st.composite
def records(draw):
    data = TracesData()
    for _ in range(draw(st.integers(1, 2))):
        rs = data.resource_spans.add()
        add_attrs(rs.resource.attributes, draw(resource_attrs))
        for _ in range(draw(st.integers(1, 2))):
            ss = rs.scope_spans.add()
            for span in draw(st.lists(spans(), min_size=0, max_size=3)):
                ss.spans.append(span)
    return data.SerializeToString()


decoders = st.builds(
    lambda tenant_keys, max_attr, max_dim, max_tokens, max_cost, skew: decoder(
        tenant_keys=tenant_keys,
        limits=Limits(
            max_tokens=max_tokens,
            max_cost_usd=max_cost,
            max_attribute_bytes=max_attr,
            max_dimension_bytes=max_dim,
            max_past_skew_s=skew,
            max_future_skew_s=skew,
        ),
        now=lambda: END_NS / NS,
    ),
    st.sampled_from([("tenant.id",), ("tenant.id", "team"), (), ("gen_ai.system",)]),
    st.sampled_from([16_384, 40, 8, 2, 0]),
    st.sampled_from([256, 256, 16_384, 40, 3, 0]),
    st.sampled_from([50_000_000, 1000, 0]),
    st.sampled_from([100_000.0, 0.01, 0.0]),
    st.sampled_from([0.0, 0.0, 3600.0]),
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(decoders, st.lists(records(), min_size=1, max_size=4), st.sampled_from([MINUTE, 7 * NS, 1]))
def test_random_attribute_sets(d, values_, window):
    both(d, values_, window)


# --- the validator against upb on mutated records ------------------------------------------

_GOOD = None
_VALIDATOR = None


def _validator():
    global _VALIDATOR
    if _VALIDATOR is None:
        _VALIDATOR = fastpath.FastTraceDecoder(decoder())._native
    return _VALIDATOR


def _good_records():
    global _GOOD
    if _GOOD is None:
        _GOOD = [*_valid_records()[:20], record(make_span(chat(extra=[1, {"a": b"x"}])))]
    return _GOOD


@settings(max_examples=6 * EXAMPLES, deadline=None)
@given(st.data())
def test_validator_matches_upb_on_mutations(data):
    value = bytearray(data.draw(st.sampled_from(_good_records())))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "set", "cut", "insert", "dup"]))
        at = data.draw(st.integers(0, max(len(value) - 1, 0)))
        if kind == "flip" and value:
            value[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and value:
            value[at] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1B, 0x1C]))
        elif kind == "cut":
            del value[at:]
        elif kind == "insert":
            value[at:at] = data.draw(st.binary(min_size=1, max_size=6))
        elif kind == "dup":
            end = data.draw(st.integers(at, len(value)))
            value[at:at] = value[at:end]
    value = bytes(value)
    try:
        TracesData().ParseFromString(value)
        upb_ok = True
    except DecodeError:
        upb_ok = False
    assert (_validator().validate(value) is None) == upb_ok
    assume(value)
    both(decoder(), [value])
