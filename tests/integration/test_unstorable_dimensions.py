"""Dimensions TimescaleDB cannot store or index are dead-lettered; the good spans land.

Real Kafka → ``observatory run`` → TimescaleDB. Before these were rejected at
decode time, a model name holding NUL made the sink's COPY raise ``DataError``
(not retried: the flow crashed), a 5 KB model name overflowed the 2704-byte
btree entry of ``llm_stats``' unique key (``ProgramLimitExceeded``, retried
forever: the flow stalled), and a lone surrogate (OTLP/JSON) could not be
encoded for the database at all. Each now goes to the dead-letter topic, as a
valid one-span record, with its reason, and everything else is written.
"""

from __future__ import annotations

import json
import secrets
import time

from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from support import produce, run_flow, write_config
from test_dead_letters import read_all

NS = 1_000_000_000
RESOURCE = {"service.name": "chat-api", "tenant.id": "acme"}
GOOD_MODEL = "gpt-4o"
NUL_MODEL = "gpt-4o\x00-evil"
BIG_MODEL = secrets.token_hex(2_500)  # 5,000 bytes that do not compress
SURROGATE_MODEL = "gpt-4o\ud800"


def _chat_attrs(model: str, session: str | None) -> dict:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20,
    }
    if session is not None:
        attrs["gen_ai.conversation.id"] = session
    return attrs


def _proto_record(spans: list[tuple[dict, bytes, int]]) -> bytes:
    """spans: (attributes, trace id, end ns)."""
    data = TracesData()
    rs = data.resource_spans.add()
    for key, value in RESOURCE.items():
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    ss = rs.scope_spans.add()
    ss.scope.name = "tests.integration"
    for i, (attrs, trace_id, end_ns) in enumerate(spans):
        span = ss.spans.add()
        span.trace_id, span.span_id = trace_id, (i + 1).to_bytes(8, "big")
        span.name = "chat"
        span.start_time_unix_nano, span.end_time_unix_nano = end_ns - 800_000_000, end_ns
        for key, value in attrs.items():
            kv = span.attributes.add()
            kv.key = key
            if isinstance(value, int):
                kv.value.int_value = value
            else:
                kv.value.string_value = value
    return data.SerializeToString()


def _json_record(spans: list[tuple[dict, str, int]]) -> bytes:
    """spans: (attributes, trace id hex, end ns); written by hand, as JSON can
    spell a lone surrogate and an id of any length."""

    def value(v):
        return {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}

    out = []
    for i, (attrs, trace_hex, end_ns) in enumerate(spans):
        out.append(
            {
                "traceId": trace_hex,
                "spanId": f"{i + 1:016x}",
                "name": "chat",
                "startTimeUnixNano": str(end_ns - 800_000_000),
                "endTimeUnixNano": str(end_ns),
                "attributes": [{"key": k, "value": value(v)} for k, v in attrs.items()],
            }
        )
    resource = [{"key": k, "value": {"stringValue": v}} for k, v in RESOURCE.items()]
    return json.dumps(
        {"resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": [{"spans": out}]}]}
    ).encode()


def test_unstorable_dimensions_are_dead_lettered_and_good_spans_land(
    tmp_path, topic, dlq_topic, db, database_url
):
    end_ns = int((time.time() - 600) * NS)
    trace = secrets.token_bytes(16)
    good = [(_chat_attrs(GOOD_MODEL, "sess-good"), trace, end_ns + i * NS) for i in range(20)]
    proto = _proto_record(
        [
            *good[:10],
            (_chat_attrs(NUL_MODEL, "sess-nul"), trace, end_ns),
            (_chat_attrs(BIG_MODEL, "sess-big"), trace, end_ns),
            *good[10:],
        ]
    )
    json_good = (_chat_attrs(GOOD_MODEL, "sess-json"), trace.hex(), end_ns)
    json_record = _json_record(
        [
            json_good,
            (_chat_attrs(SURROGATE_MODEL, "sess-surrogate"), trace.hex(), end_ns),
            # no session id: the 3,000-byte trace id would key the agent session
            (_chat_attrs(GOOD_MODEL, None), "ab" * 1_500, end_ns),
        ]
    )
    produce(topic, [(proto, []), (json_record, [("content-type", b"application/json")])])
    config = write_config(tmp_path, topic, dlq_topic, database_url)
    result = run_flow(config, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]

    dead = read_all(dlq_topic)
    letters = sorted(
        (
            dict(m.headers())["observatory.reason"].decode(),
            dict(m.headers())["observatory.detail"].decode(),
            m.value(),
        )
        for m in dead
    )
    assert [(reason, detail.split(" ")[0]) for reason, detail, _ in letters] == [
        ("invalid_text", "model"),  # NUL (protobuf, native decoder)
        ("invalid_text", "model"),  # lone surrogate (OTLP/JSON, Python decoder)
        ("oversized_dimension", "model"),  # 5,000 bytes
        ("oversized_dimension", "trace_id"),  # 3,000 bytes of hex
    ], [(r, d) for r, d, _ in letters]
    # Each letter is the offending span alone, in its record's encoding.
    models = set()
    for _, _, value in letters:
        if value.startswith(b"{"):
            (span,) = json.loads(value)["resourceSpans"][0]["scopeSpans"][0]["spans"]
            attrs = {kv["key"]: kv["value"] for kv in span["attributes"]}
            models.add(attrs["gen_ai.request.model"]["stringValue"])
        else:
            data = TracesData()
            data.ParseFromString(value)
            (span,) = data.resource_spans[0].scope_spans[0].spans
            attrs = {kv.key: kv.value for kv in span.attributes}
            models.add(attrs["gen_ai.request.model"].string_value)
    assert models == {NUL_MODEL, BIG_MODEL, SURROGATE_MODEL, GOOD_MODEL}

    stats = db.execute(
        "SELECT tenant, service, model, sum(calls)::bigint FROM llm_stats GROUP BY 1, 2, 3"
    ).fetchall()
    assert stats == [("acme", "chat-api", GOOD_MODEL, 21)]
    sessions = dict(
        db.execute("SELECT session_id, llm_calls FROM agent_sessions WHERE tenant = 'acme'")
    )
    assert sessions == {"sess-good": 20, "sess-json": 1}
    counters = dict(
        db.execute("SELECT name, sum(value)::bigint FROM pipeline_counters GROUP BY name")
    )
    assert counters["spans"] == 25
    assert counters["spans_normalized"] == 21
    assert counters["spans_dead_lettered"] == 4
    assert counters["records_dead_lettered"] == 0
