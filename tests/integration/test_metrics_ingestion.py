"""GenAI metrics from the real OpenTelemetry SDK, through real Kafka, into llm_stats."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import NewTopic
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from support import produce, run_flow, write_config
from test_end_to_end import stored

ATTRS = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
}


@pytest.fixture
def metrics_topic(kafka_admin):
    name = f"test_metrics_{uuid.uuid4().hex[:10]}"
    kafka_admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[
        name
    ].result(timeout=30)
    yield name
    kafka_admin.delete_topics([name], operation_timeout=30)


@pytest.mark.parametrize("temporality", ["delta", "cumulative"])
def test_sdk_metrics_become_window_stats(
    tmp_path, topic, metrics_topic, dlq_topic, db, database_url, temporality
):
    mode = (
        AggregationTemporality.DELTA
        if temporality == "delta"
        else AggregationTemporality.CUMULATIVE
    )
    reader = InMemoryMetricReader(preferred_temporality={Histogram: mode})
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource({"service.name": "metrics-app", "tenant.id": "acme"}),
    )
    meter = provider.get_meter("opentelemetry.instrumentation.openai_v2")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    records = []
    for batch in range(3):  # three exports, as a periodic reader would send them
        for i in range(10):
            duration.record(0.5 + i / 10, ATTRS)
            tokens.record(100, {**ATTRS, "gen_ai.token.type": "input"})
            tokens.record(20, {**ATTRS, "gen_ai.token.type": "output"})
        records.append((encode_metrics(reader.get_metrics_data()).SerializeToString(), []))
        assert batch < 3
    produce(metrics_topic, records)
    config = write_config(
        tmp_path,
        topic,
        dlq_topic,
        database_url,
        kafka={"topics": {"spans": topic, "metrics": metrics_topic, "dead_letter": dlq_topic}},
    )
    result = run_flow(config)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = stored(db, "llm_stats")
    mine = rows[(rows["service"] == "metrics-app") & (rows["tenant"] == "acme")]
    assert set(mine["model"]) == {"gpt-4o-mini"} and set(mine["provider"]) == {"openai"}
    assert mine["calls"].sum() == 30
    assert mine["input_tokens"].sum() == 3000 and mine["output_tokens"].sum() == 600
    expected_cost = 30 * (100 * 0.15 + 20 * 0.60) / 1e6
    assert abs(mine["cost_usd"].sum() - expected_cost) < 1e-9
