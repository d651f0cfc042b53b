"""The main dataflow: Kafka OTLP records → windows → TimescaleDB, bad input → dead letters.

read_otlp_records → decode_normalize_price_preaggregate
    ├─ route_partials_to_shards → aggregate_event_time_windows
    │      ├─ (rows) → log_progress → upsert_into_timescaledb
    │      ├─ (closed windows) → detect_anomalies → enqueue_alerts_in_outbox
    │      └─ (late data) ─────────────┐
    └─ collect_dead_letters ───────────┴─ write_dead_letters
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from observatory.detectors.config import build_detectors
from observatory.flows.config import Config
from observatory.flows.kafka_io import (
    DeadLetterSink,
    KafkaBatchSource,
    client_config,
    dead_letter_headers,
)
from observatory.operators.detect import DetectFeed, DetectionStage
from observatory.operators.ingest import decode_batch, route_to_shards, shard_name
from observatory.operators.metrics import (
    MetricsShard,
    decode_metrics_batch,
    route_metrics_to_shards,
)
from observatory.operators.windows import CountersRow, LateData, ShardInput, WindowShard
from observatory.schemas.dialects import Limits
from observatory.schemas.fastpath import FastTraceDecoder
from observatory.schemas.otlp import TraceDecoder
from observatory.schemas.otlp_metrics import MetricsDecoder
from observatory.schemas.pricing import PriceTable
from observatory.schemas.records import DeadLetter
from observatory.sinks.alerts import AlertOutboxSink
from observatory.sinks.base import Backoff
from observatory.sinks.timescale import TimescaleSink

NS = 1_000_000_000
log = logging.getLogger("observatory.flows")


def limits_from(config: Config) -> Limits:
    ingest = config.ingest
    return Limits(
        max_tokens=ingest.max_tokens,
        max_cost_usd=ingest.max_cost_usd,
        max_attribute_bytes=ingest.max_attribute_bytes,
        max_dimension_bytes=ingest.max_dimension_bytes,
        max_past_skew_s=ingest.max_past_skew_seconds,
        max_future_skew_s=ingest.max_future_skew_seconds,
    )


def make_decoder(config: Config, topic: str) -> TraceDecoder:
    ingest = config.ingest
    return TraceDecoder(
        tenant_keys=ingest.tenant_attributes,
        limits=limits_from(config),
        prices=PriceTable.bundled(m.model_dump() for m in config.pricing.models),
        default_encoding=config.kafka.encoding_of(topic),
        max_record_bytes=ingest.max_record_bytes,
    )


def make_metrics_decoder(config: Config, topic: str, prices: PriceTable) -> MetricsDecoder:
    ingest = config.ingest
    return MetricsDecoder(
        tenant_keys=ingest.tenant_attributes,
        limits=limits_from(config),
        prices=prices,
        default_encoding=config.kafka.encoding_of(topic),
        max_record_bytes=ingest.max_record_bytes,
    )


class _MetricsLogic(StatefulBatchLogic):
    """Adapts the pure :class:`MetricsShard` (cumulative → delta → partials)."""

    def __init__(self, shard: MetricsShard):
        self.shard = shard

    def on_batch(self, values):
        return self.shard.on_batch(values), StatefulBatchLogic.RETAIN

    def on_eof(self):
        return self.shard.on_eof(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return self.shard.snapshot()


class _DetectLogic(StatefulBatchLogic[DetectFeed, object, bytes]):
    """Adapts the pure :class:`DetectionStage` to Bytewax's stateful operator."""

    def __init__(self, stage: DetectionStage):
        self.stage = stage

    def on_batch(self, values: list[DetectFeed]):
        return self.stage.on_batch(values), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return self.stage.snapshot()


def detection_enabled(config: Config) -> bool:
    detectors = build_detectors(config.detectors)
    return bool(detectors.series or detectors.runaway or detectors.budget)


class _ShardLogic(StatefulBatchLogic[ShardInput, object, bytes]):
    """Adapts the pure :class:`WindowShard` to Bytewax's stateful operator."""

    def __init__(self, shard: WindowShard):
        self.shard = shard

    def on_batch(self, values: list[ShardInput]):
        return self.shard.on_batch(values), StatefulBatchLogic.RETAIN

    def on_notify(self):
        return self.shard.on_notify(), StatefulBatchLogic.RETAIN

    def on_eof(self):
        return self.shard.on_eof(), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.shard.notify_at()

    def snapshot(self) -> bytes:
        return self.shard.snapshot()


def _late_to_dead_letter(late: LateData, topic: str) -> KafkaSinkMessage:
    body = {
        "reason": "too_late",
        "key": dict(
            zip(
                ("tenant", "service", "provider", "model", "operation", "tool"),
                late.key,
                strict=True,
            )
        ),
        "window_start": late.window_start.isoformat(),
        "window_seconds": late.window_seconds,
        "calls": late.calls,
        "cost_usd": late.cost_usd,
        "watermark": late.watermark.isoformat(),
    }
    headers = [
        ("observatory.reason", b"too_late"),
        ("observatory.detail", f"{late.calls} calls arrived after the allowed lateness".encode()),
    ]
    return KafkaSinkMessage(None, json.dumps(body).encode(), topic=topic, headers=headers)


def _dead_letter_message(dead: DeadLetter, topic: str) -> KafkaSinkMessage:
    return KafkaSinkMessage(None, dead.value, topic=topic, headers=dead_letter_headers(dead))


def build_flow(config: Config, *, stop_at_end: bool = False) -> Dataflow:
    kafka = config.kafka
    pipeline = config.pipeline
    topic = kafka.topics.spans
    dlq_topic = kafka.topics.dead_letter
    window_ns = pipeline.window_seconds * NS
    shards = pipeline.shards
    kafka_config = client_config(kafka.bootstrap_servers, kafka.client)
    metrics_topic = kafka.topics.metrics
    topics = [topic, metrics_topic] if metrics_topic else [topic]
    source = KafkaBatchSource(
        kafka_config, topics, batch_size=kafka.batch_size, stop_at_end=stop_at_end
    )
    partitions = source.list_parts()
    decoder = make_decoder(config, topic)

    detect = detection_enabled(config)
    checks = pipeline.checks_per_window if detect else 1
    # Calls are binned by hop (a window / checks) so that the shards can tell
    # the detection stage what each part of an open window held.
    bin_ns = window_ns // checks

    def build_shard(resume: bytes | None) -> _ShardLogic:
        return _ShardLogic(
            WindowShard(
                window_s=pipeline.window_seconds,
                watermark_delay_s=pipeline.watermark_delay_seconds,
                allowed_lateness_s=pipeline.allowed_lateness_seconds,
                idle_timeout_s=pipeline.idle_partition_seconds,
                partitions=partitions,
                session_timeout_s=pipeline.session_timeout_seconds,
                session_update_s=pipeline.session_update_seconds,
                max_sessions=pipeline.max_sessions_per_shard,
                detect=detect,
                runaway=build_detectors(config.detectors).runaway,
                runaway_severity=config.detectors.runaway_loop.severity,
                checks_per_window=checks,
                resume=resume,
            )
        )

    def build_detection(resume: bytes | None) -> _DetectLogic:
        return _DetectLogic(
            DetectionStage(
                window_s=pipeline.window_seconds,
                shards=[shard_name(i) for i in range(shards)],
                detectors=config.detectors,
                policy=config.alerts.lifecycle_policy(),
                checks_per_window=checks,
                resume=resume,
            )
        )

    flow = Dataflow("observatory")
    batches = op.input("read_otlp_records", flow, source)
    if metrics_topic:
        split = op.branch(
            "split_spans_from_metrics",
            batches,
            lambda batch: batch.part_id.rsplit("-", 1)[0] != metrics_topic,
        )
        batches, metric_batches = split.trues, split.falses
    fast = FastTraceDecoder(decoder) if config.ingest.native_decoder else None
    if fast is not None and not fast.native:
        log.warning("native decoder not in use (%s): decoding in Python", fast.reason)
    decoded = op.map(
        "decode_normalize_price_preaggregate",
        batches,
        lambda batch: decode_batch(decoder, batch, bin_ns, fast=fast),
    )
    shard_inputs = op.flat_map(
        "route_partials_to_shards", decoded, lambda d: route_to_shards(d, shards)
    )
    dead = op.flat_map("collect_dead_letters", decoded, lambda d: d.dead_letters)
    extra_rows = []
    if metrics_topic:
        metrics_decoder = make_metrics_decoder(config, metrics_topic, decoder.prices)
        metrics_decoded = op.map(
            "decode_metrics", metric_batches, lambda b: decode_metrics_batch(metrics_decoder, b)
        )
        metric_routed = op.flat_map(
            "route_metric_points_to_shards",
            metrics_decoded,
            lambda d: route_metrics_to_shards(d, shards),
        )
        metric_out = op.stateful_batch(
            "metrics_to_delta_partials",
            metric_routed,
            lambda resume: _MetricsLogic(
                MetricsShard(window_s=pipeline.window_seconds, prices=decoder.prices, resume=resume)
            ),
        )
        metric_inputs = op.filter(
            "metric_shard_inputs", metric_out, lambda kv: isinstance(kv[1], ShardInput)
        )
        extra_rows.append(
            op.filter("metric_counters", metric_out, lambda kv: isinstance(kv[1], CountersRow))
        )
        shard_inputs = op.merge("span_and_metric_partials", shard_inputs, metric_inputs)
        dead = op.merge(
            "span_and_metric_dead_letters",
            dead,
            op.flat_map("collect_metric_dead_letters", metrics_decoded, lambda d: d.dead_letters),
        )
    outputs = op.stateful_batch("aggregate_event_time_windows", shard_inputs, build_shard)
    if extra_rows:
        outputs = op.merge("window_and_metric_rows", outputs, *extra_rows)
    named = op.map("name_rows_by_shard", outputs, _tag_shard)
    rows = op.filter(
        "keep_table_rows", named, lambda row: not isinstance(row, LateData | DetectFeed)
    )
    if detect:
        feeds = op.filter("keep_closed_windows", named, lambda row: isinstance(row, DetectFeed))
        # One detection key: its work is per closed window, not per span.
        keyed_feeds = op.key_on("all_windows_to_detection", feeds, lambda _: "detection")
        alerts = op.stateful_batch("detect_anomalies", keyed_feeds, build_detection)
        op.output(
            "enqueue_alerts_in_outbox",
            op.map("drop_detection_key", alerts, lambda kv: kv[1]),
            AlertOutboxSink(
                config.database.url,
                config.alerts,
                backoff=Backoff(deadline_s=config.database.max_retry_seconds),
            ),
        )
    op.output(
        "upsert_into_timescaledb",
        op.inspect("log_progress", rows, ProgressLog()),
        TimescaleSink(
            config.database.url,
            batch_rows=config.database.batch_rows,
            backoff=Backoff(deadline_s=config.database.max_retry_seconds),
            connect_timeout_s=config.database.connect_timeout_seconds,
        ),
    )
    late = op.filter_map(
        "late_data_as_dead_letters",
        named,
        lambda row: _late_to_dead_letter(row, dlq_topic) if isinstance(row, LateData) else None,
    )
    dead_messages = op.map(
        "dead_letter_as_message", dead, lambda d: _dead_letter_message(d, dlq_topic)
    )
    op.output(
        "write_dead_letters",
        op.merge("all_dead_letters", dead_messages, late),
        DeadLetterSink(client_config(kafka.bootstrap_servers, kafka.client)),
    )
    return flow


class ProgressLog:
    """Logs what the flow has done so far, at most every ``interval_s``.

    Fed every table row; only the shards' running counters are looked at. A
    process logs the totals of the shards it runs.

    >>> progress = ProgressLog(interval_s=0, clock=iter([0.0, 10.0]).__next__)
    >>> progress("log_progress", CountersRow("shard-0", (("spans", 50_000),)))
    >>> progress.totals()["spans"], progress.rate
    (50000, 5000.0)
    """

    def __init__(self, interval_s: float = 10.0, clock=time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._by_shard: dict[str, dict[str, int]] = {}
        self._logged_at = clock()
        self._logged_spans = 0
        self.rate = 0.0

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for values in self._by_shard.values():
            for name, value in values.items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def __call__(self, _step_id: str, row: object) -> None:
        if not isinstance(row, CountersRow):
            return
        self._by_shard[row.shard] = dict(row.values)
        now = self._clock()
        if now - self._logged_at < self.interval_s:
            return
        t = self.totals()
        spans = t.get("spans", 0)
        self.rate = (spans - self._logged_spans) / max(now - self._logged_at, 1e-9)
        self._logged_at, self._logged_spans = now, spans
        log.info(
            "progress: %s spans read (%s/s), %s GenAI calls, %s records and %s spans "
            "dead-lettered, %s late calls",
            f"{spans:,}",
            f"{self.rate:,.0f}",
            f"{t.get('spans_normalized', 0):,}",
            f"{t.get('records_dead_lettered', 0):,}",
            f"{t.get('spans_dead_lettered', 0):,}",
            f"{t.get('late_calls_dead_lettered', 0):,}",
        )


def _tag_shard(keyed: tuple[str, object]) -> object:
    """Counters rows carry the shard they came from; other rows pass through."""
    shard, row = keyed
    if isinstance(row, CountersRow):
        return CountersRow(shard, row.values)
    if isinstance(row, DetectFeed):
        row.shard = shard
    return row
