"""The ceiling: raw confluent-kafka consumption plus protobuf parse of the whole topic.

One process, one consumer assigned every partition from the beginning, reading
up to the end offsets present at start; each record is parsed with
``TracesData.ParseFromString`` and its spans iterated (reading each span's end
time). Nothing is normalized, aggregated or written: this is the most a single
Python process can pull off this broker, the yardstick for the pipeline.

    python -m bench.ceiling --topic T --json OUT
"""

from __future__ import annotations

import argparse
import json
import time

from bench.common import BOOTSTRAP


def consume_and_parse(topic: str, bootstrap: str = BOOTSTRAP, batch: int = 5000) -> dict:
    from confluent_kafka import Consumer, TopicPartition
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    started = time.monotonic()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-ceiling-{time.time_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 50,
        }
    )
    meta = consumer.list_topics(topic, timeout=15).topics[topic]
    ends = {}
    for p in meta.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
        if high > low:
            ends[p] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    remaining = dict(ends)
    records = spans = size = 0
    latest = 0
    first_at = None
    while remaining:
        messages = consumer.consume(batch, 1.0)
        if first_at is None and messages:
            first_at = time.monotonic()
        for message in messages:
            if message.error() is not None:
                continue
            p, offset = message.partition(), message.offset()
            end = remaining.get(p)
            if end is None or offset >= end:
                continue
            if offset + 1 >= end:
                del remaining[p]
            value = message.value()
            size += len(value)
            records += 1
            data = TracesData()
            data.ParseFromString(value)
            for resource_spans in data.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        spans += 1
                        end_ns = span.end_time_unix_nano
                        if end_ns > latest:
                            latest = end_ns
    finished = time.monotonic()
    consumer.close()
    return {
        "records": records,
        "spans": spans,
        "bytes": size,
        "seconds": finished - started,
        "seconds_from_first_record": finished - (first_at or started),
        "spans_per_s": spans / max(finished - started, 1e-9),
        "latest_event_ns": latest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--bootstrap", default=BOOTSTRAP)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    result = consume_and_parse(args.topic, args.bootstrap)
    with open(args.json, "w") as handle:
        json.dump(result, handle)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
