"""Malformed input goes to the dead-letter topic with its reason; every span is accounted for."""

from __future__ import annotations

import random
import time

from confluent_kafka import Consumer, TopicPartition
from support import BOOTSTRAP, produce, run_flow, write_config

from observatory.flows.simulate import NS, Simulator, Summary, make_records


def read_all(topic: str, partitions: int = 1, idle_s: float = 3.0) -> list:
    consumer = Consumer(
        {"bootstrap.servers": BOOTSTRAP, "group.id": f"t{time.time()}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages, last = [], time.time()
    while time.time() - last < idle_s:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            messages.append(msg)
            last = time.time()
    consumer.close()
    return messages


def test_malformed_records_are_dead_lettered_with_reason_and_source(
    tmp_path, topic, dlq_topic, db, database_url
):
    end = time.time()
    sim = Simulator(calls=10_000, start_ns=int((end - 1800) * NS), end_ns=int(end * NS), seed=21)
    summary = Summary()
    produced = list(
        make_records(
            sim.generate(),
            random.Random(21),
            encoding="mixed",
            max_spans=25,
            malformed_rate=0.01,
            summary=summary,
        )
    )
    records = [(value, headers) for value, headers, _ in produced]
    malformed = [value for value, _, spans in produced if spans == 0]
    assert len(malformed) == summary.malformed_records >= 5
    produce(topic, records)
    config = write_config(tmp_path, topic, dlq_topic, database_url)
    result = run_flow(config)
    assert result.returncode == 0, result.stderr[-3000:]

    dead = read_all(dlq_topic)
    dead_values = [m.value() for m in dead]
    for value in malformed:
        assert value in dead_values, "a malformed record is missing from the dead-letter topic"
    for message in dead:
        headers = dict(message.headers())
        assert headers["observatory.reason"] in {
            b"invalid_protobuf",
            b"invalid_json",
            b"empty_record",
            b"wrong_encoding",
        }
        assert headers["observatory.source.topic"] == topic.encode()
        assert int(headers["observatory.source.offset"]) >= 0
        assert headers["observatory.detail"]

    counters = dict(
        db.execute(
            "SELECT name, sum(value)::bigint FROM pipeline_counters GROUP BY name"
        ).fetchall()
    )
    assert counters["records"] == summary.records
    assert counters["records_dead_lettered"] == len(dead) == summary.malformed_records
    assert (
        (
            counters["spans_normalized"]
            + counters["spans_skipped_non_genai"]
            + counters["spans_dead_lettered"]
        )
        == counters["spans"]
        == sim.summary.spans
    )
    assert counters["spans_normalized"] == len(sim.truth)
