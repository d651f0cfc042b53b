"""The benchmark's one workload: simulated GenAI agent traffic in a fresh Kafka topic.

Spans come from the project's own traffic model (:class:`Simulator`: the real
OpenTelemetry SDK, six attribute dialects, sessions with tool calls, ~5% plain
HTTP spans) and are encoded with the OTLP exporter's encoder into
``otlp_proto`` records of 40..60 spans (~50, like a Collector batch), then
produced without keys (the Collector's Kafka exporter default) with lz4.

Event time runs at about ``spans_per_event_minute`` spans per minute and ends
two hours before now: the peer's closing markers (15 minutes after the last
span) must stay in the past, because Kafka rejects record timestamps more than
an hour in the future (``log.message.timestamp.after.max.ms``).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

from bench.common import BOOTSTRAP, log

NS = 1_000_000_000
MINUTE_NS = 60 * NS


@dataclass
class Workload:
    topic: str
    partitions: int
    spans: int
    records: int
    bytes: int
    first_event_ns: int
    last_event_ns: int
    produce_seconds: float
    end_offsets: dict[int, int]

    def as_dict(self) -> dict:
        data = asdict(self)
        data["end_offsets"] = {str(k): v for k, v in self.end_offsets.items()}
        return data


def produce_workload(
    topic: str,
    *,
    spans: int,
    partitions: int,
    seed: int = 7,
    tenants: int = 8,
    spans_per_record: tuple[int, int] = (40, 60),
    spans_per_event_minute: int = 50_000,
) -> Workload:
    from confluent_kafka import Producer
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from bench.common import end_offsets
    from observatory.flows.simulate import Simulator

    # The traffic model makes ~2.5 spans per "call" at its mean rate; the daily cycle
    # moves that by ±50%, so give it a range long enough and stop at the span target.
    calls_per_minute = spans_per_event_minute / 2.5
    minutes = spans / spans_per_event_minute * 2.2 + 10
    end_ns = int((time.time() - 2 * 3600) * NS)
    end_ns -= end_ns % MINUTE_NS
    sim = Simulator(
        start_ns=end_ns - int(minutes * MINUTE_NS),
        end_ns=end_ns,
        calls_per_minute=calls_per_minute,
        tenants=tenants,
        seed=seed,
        keep_truth=False,
    )
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "linger.ms": 20,
            "compression.type": "lz4",
            "message.max.bytes": 10_000_000,
            "queue.buffering.max.kbytes": 512 * 1024,
        }
    )
    rng = random.Random(seed)
    failures: list[str] = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(str(err))

    started = time.monotonic()
    produced_spans = records = size = 0
    first_ns = last_ns = 0
    next_report = spans // 10
    chunk: list = []
    want = rng.randint(*spans_per_record)

    def flush_chunk() -> None:
        nonlocal records, size, produced_spans, chunk, want
        value = encode_spans(chunk).SerializeToString()
        while True:
            try:
                producer.produce(topic, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        records += 1
        size += len(value)
        produced_spans += len(chunk)
        chunk = []
        want = rng.randint(*spans_per_record)

    for span in sim.stream():
        if not first_ns:
            first_ns = span.end_time
        last_ns = span.end_time
        chunk.append(span)
        if len(chunk) >= want:
            flush_chunk()
            if produced_spans >= next_report:
                log(
                    f"  produced {produced_spans:,} / {spans:,} spans "
                    f"({time.monotonic() - started:.0f}s)"
                )
                next_report += spans // 10
            if produced_spans >= spans:
                break
    if chunk:
        flush_chunk()
    if producer.flush(120):
        raise RuntimeError("workload: records still undelivered after 120s")
    if failures:
        raise RuntimeError(f"workload: {len(failures)} records failed: {failures[0]}")
    if produced_spans < spans:
        log(f"  note: the traffic model ended at {produced_spans:,} spans")
    return Workload(
        topic=topic,
        partitions=partitions,
        spans=produced_spans,
        records=records,
        bytes=size,
        first_event_ns=first_ns,
        last_event_ns=last_ns,
        produce_seconds=time.monotonic() - started,
        end_offsets=end_offsets(topic),
    )


def marker_record(event_ns: int, keys) -> bytes:
    """One valid ``TracesData`` with one GenAI span per (tenant, service, provider, model,
    operation, tool) key, all ending at ``event_ns``, with the attributes that decode back
    to exactly that key.

    Quix closes a window only when later data for the same key (closing strategy
    "key") or the same partition ("partition") arrives: one such span per key
    seen closes every window in either strategy.
    """
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    data = TracesData()
    for i, (tenant, service, provider, model, operation, tool) in enumerate(keys):
        rs = data.resource_spans.add()
        for key, value in (("service.name", service), ("tenant.id", tenant)):
            if value:
                kv = rs.resource.attributes.add()
                kv.key, kv.value.string_value = key, value
        span = rs.scope_spans.add().spans.add()
        span.trace_id = (i + 1).to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.start_time_unix_nano = event_ns - 1_000_000
        span.end_time_unix_nano = event_ns
        span.name = f"{operation} {model}".strip()
        attributes = [("gen_ai.operation.name", operation)]
        if provider:
            attributes.append(("gen_ai.provider.name", provider))
        if model:
            attributes += [("gen_ai.request.model", model), ("gen_ai.response.model", model)]
        if tool:
            attributes.append(("gen_ai.tool.name", tool))
        for key, value in attributes:
            kv = span.attributes.add()
            kv.key, kv.value.string_value = key, value
    return data.SerializeToString()
