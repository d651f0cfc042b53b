"""The peer: the same per-minute aggregation, written idiomatically with Quix Streams.

    records ──(value deserializer: the project's TraceDecoder, split into one
               message per call; event-time timestamp_extractor = span end)──▶
    group_by(tenant, service, provider, model, operation, tool)   # repartition topic
    tumbling_window(60 s, grace 300 s).agg(Count, Sum…, Max, Collect(latency))
    .final()                                                 # closing strategy "key"
    → row (exact p50/p95/p99 at rank floor(q·(n−1)))
    → BatchingSink: COPY + INSERT … ON CONFLICT into ``peer_llm_stats``

Decoding uses :class:`TraceDecoder` so both sides normalize identically, and
the key's tool is the documented rule (``execute_tool`` calls by their tool
name, cut to 128 characters; '' otherwise), written out here; the grace period
equals our ``allowed_lateness_seconds``. Quix keeps its state in
RocksDB with changelog topics and commits every 5 s (its defaults: the
counterpart of our recovery snapshots).

Closing strategy. Quix's default ("key") is used. Its "partition" strategy
re-opens windows it has already emitted: its lateness test compares against
the expiry cursor minus the grace period, so a record up to ``grace`` older
than the cursor lands in a window that was already emitted and deleted,
starts it afresh, and the window is emitted again holding only the stragglers
(seen in quixstreams 3.28.1; ``windows_reemitted`` counts it; choose it with
``--closing-strategy partition``).

Ending. Quix closes a window only when later data for its key arrives, and
``app.run`` cannot "flush at end of input". So once every input partition has
been processed up to the end offsets present at start, this process produces
one closing-marker record (one GenAI span per key seen, 15 minutes of event
time after the last span; checked to decode back to the same keys) into the
input topic. Those spans reach each key's state after all its real data and
push its event time past every window's end + grace, so every real window is
emitted; the markers' own windows never close. When every marker span has
passed the window step the app stops (``Application.stop``, which commits the
last checkpoint and so flushes the sink). An idle timeout (``--idle-timeout-s``)
is only a fallback. The markers are appended to the input topic, so the peer
must be the last reader of a topic.

    python -m bench.peer --topic T --database-url URL --end-offsets JSON --marker-ns NS --json OUT
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta

T_IMPORT = time.time()

# Columns of llm_stats the peer fills (exemplars stay at the default '{}').
ROW_COLUMNS = (
    "bucket", "window_seconds", "tenant", "service", "provider", "model", "operation", "tool",
    "calls", "errors", "input_tokens", "output_tokens", "cached_input_tokens",
    "reasoning_tokens", "cost_usd", "unpriced_calls", "latency_p50_ms", "latency_p95_ms",
    "latency_p99_ms", "latency_max_ms", "ttft_p95_ms",
)  # fmt: skip
KEY_COLUMNS = (
    "bucket", "window_seconds", "tenant", "service", "provider", "model", "operation", "tool"
)  # fmt: skip
SEP = "\x1f"
#: The tool dimension: the tool name of execute_tool calls (cut), '' otherwise.
TOOL_OPERATION = "execute_tool"
MAX_TOOL_CHARS = 128


def call_key(call) -> tuple[str, str, str, str, str, str]:
    """(tenant, service, provider, model, operation, tool) of a decoded call."""
    tool = call.tool[:MAX_TOOL_CHARS] if call.operation == TOOL_OPERATION else ""
    return (call.tenant, call.service, call.provider, call.model, call.operation, tool)


def create_table(url: str, table: str = "peer_llm_stats") -> None:
    """``(LIKE llm_stats INCLUDING DEFAULTS)`` with the same unique key, as a hypertable."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (LIKE llm_stats INCLUDING DEFAULTS)")
        conn.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_key UNIQUE ({', '.join(KEY_COLUMNS)})"
        )
        conn.execute(
            "SELECT create_hypertable(%s, 'bucket', chunk_time_interval => interval '1 day')",
            (table,),
        )


def _rank_value(values: list[float], q: float) -> float | None:
    """Exact quantile at 0-based rank floor(q·(n−1)) (pandas interpolation='lower')."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def build_app(args, stats: dict):
    from confluent_kafka import Producer
    from quixstreams import Application
    from quixstreams.context import message_context
    from quixstreams.dataframe.windows import Collect, Count, Max, Sum
    from quixstreams.models.serializers import Deserializer
    from quixstreams.sinks import BatchingSink, SinkBatch

    from bench.workload import marker_record
    from observatory.flows.config import load_config
    from observatory.flows.pipeline import make_decoder
    from observatory.schemas.records import SourceRef

    config = load_config(None)
    decoder = make_decoder(config, args.topic)  # the same decoder settings as the flow
    keys_seen: set[str] = set()
    phase = {"markers_sent": False, "markers_expected": 0, "markers_seen": 0}

    class OtlpCalls(Deserializer):
        """One Kafka record → one message per normalized, priced LLM call."""

        @property
        def split_values(self) -> bool:
            return True

        def __call__(self, value: bytes, ctx) -> list[dict]:
            result = decoder.decode(value, SourceRef(ctx.topic, -1, -1), ctx.headers)
            marker = phase["markers_sent"]  # everything after the last real record
            if marker:
                stats["marker_records"] += 1
                stats["marker_spans"] += result.counters.spans
            else:
                stats["records"] += 1
                stats["spans"] += result.counters.spans
                stats["calls"] += len(result.calls)
                if stats["first_record_at"] is None:
                    stats["first_record_at"] = time.time()
            calls = []
            for call in result.calls:
                cost = call.cost_usd
                key = SEP.join(call_key(call))
                keys_seen.add(key)
                calls.append(
                    {
                        "key": key,
                        "marker": marker,
                        "end_ms": call.end_ns // 1_000_000,
                        "duration_ms": call.duration_ms,
                        "errors": 1 if call.is_error else 0,
                        "input_tokens": call.input_tokens,
                        "output_tokens": call.output_tokens,
                        "cached_input_tokens": call.cached_input_tokens,
                        "reasoning_tokens": call.reasoning_tokens,
                        "cost_usd": 0.0 if cost is None else cost,
                        "unpriced_calls": 1 if cost is None else 0,
                        "ttft_ms": call.ttft_ms,
                    }
                )
            return calls

    emitted: set[tuple[str, int]] = set()

    class PeerStatsSink(BatchingSink):
        """COPY into a staging table, then one upsert (the same technique as ours)."""

        def __init__(self, url: str, table: str):
            super().__init__()
            self._url = url
            self._table = table
            self._conn = None

        def setup(self):
            import psycopg

            self._conn = psycopg.connect(self._url)
            with self._conn.transaction():
                self._conn.execute(
                    f"CREATE TEMP TABLE _stage_{self._table} (LIKE {self._table} "
                    "INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )

        def write(self, batch: SinkBatch):
            rows = [item.value for item in batch]
            if not rows:
                return
            cols = ", ".join(ROW_COLUMNS)
            updates = ", ".join(
                f"{c} = EXCLUDED.{c}" for c in (*ROW_COLUMNS, "updated_at") if c not in KEY_COLUMNS
            )
            conn = self._conn
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY _stage_{self._table} ({cols}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(
                    f"INSERT INTO {self._table} ({cols}, updated_at) "
                    f"SELECT {cols}, now() FROM _stage_{self._table} "
                    f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {updates}"
                )
            stats["rows_written"] += len(rows)
            stats["last_write_at"] = time.time()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(
        args.topic,
        key_deserializer="bytes",
        value_deserializer=OtlpCalls(),
        timestamp_extractor=lambda value, headers, timestamp, kind: value["end_ms"],
    )
    ends = {int(p): int(o) for p, o in json.loads(args.end_offsets).items() if int(o) > 0}
    done: set[int] = set()
    latest_by_partition: dict[int, int] = {}

    def send_markers() -> None:
        keys = sorted(tuple(k.split(SEP)) for k in keys_seen)
        record = marker_record(args.marker_ns, keys)
        check = decoder.decode(record, SourceRef(args.topic, -1, -1))
        decoded = {SEP.join(call_key(c)) for c in check.calls}
        stats["marker_keys"] = len(keys)
        stats["marker_keys_not_round_tripping"] = len(keys_seen - decoded)
        phase["markers_expected"] = len(check.calls)
        phase["markers_sent"] = True
        stats["inputs_done_at"] = time.time()
        producer = Producer({"bootstrap.servers": args.bootstrap, "message.max.bytes": 10_000_000})
        producer.produce(args.topic, value=record, partition=min(ends))
        producer.flush(30)

    def track_input(value):
        ctx = message_context()
        partition = ctx.partition
        # Event-time skew between the input partitions as consumed (diagnostic).
        latest = latest_by_partition.get(partition, 0)
        if value["end_ms"] > latest:
            latest_by_partition[partition] = value["end_ms"]
            active = [t for p, t in latest_by_partition.items() if p not in done]
            if len(active) > 1:
                stats["max_partition_skew_s"] = max(
                    stats["max_partition_skew_s"], (max(active) - min(active)) / 1000
                )
        if phase["markers_sent"] or partition in done:
            return
        if ctx.offset + 1 >= ends.get(partition, 0):
            done.add(partition)
            if len(done) == len(ends):
                send_markers()

    def track_markers(value):
        # Runs just before the window step; stop() lets this message finish first.
        if value["marker"]:
            phase["markers_seen"] += 1
            if phase["markers_seen"] >= phase["markers_expected"]:
                stats["stopped_by"] = "markers"
                stats["markers_done_at"] = time.time()
                app.stop()

    def count_late(value, key, timestamp_ms, late_by_ms, start, end, name, topic, part, offset):
        stats["late_dropped"] += 1
        return False

    def to_row(value, key, timestamp, headers):
        if (key, value["start"]) in emitted:
            stats["windows_reemitted"] += 1
        emitted.add((key, value["start"]))
        tenant, service, provider, model, operation, tool = key.split(SEP)
        latencies = value["latencies"]
        ttfts = [t for t in value["ttfts"] if t is not None]
        return (
            datetime.fromtimestamp(value["start"] // 1000, tz=UTC),
            (value["end"] - value["start"]) // 1000,
            tenant, service, provider, model, operation, tool,
            value["calls"], value["errors"], value["input_tokens"], value["output_tokens"],
            value["cached_input_tokens"], value["reasoning_tokens"], value["cost_usd"],
            value["unpriced_calls"],
            _rank_value(latencies, 0.50), _rank_value(latencies, 0.95),
            _rank_value(latencies, 0.99), value["latency_max_ms"], _rank_value(ttfts, 0.95),
        )  # fmt: skip

    sdf = app.dataframe(topic)
    sdf = sdf.update(track_input)
    sdf = sdf.group_by(lambda value: value["key"], name="stats_key")
    sdf = sdf.update(track_markers)
    sdf = (
        sdf.tumbling_window(
            timedelta(seconds=60),
            grace_ms=timedelta(seconds=args.grace_s),
            name="llm_stats_1m",
            on_late=count_late,
        )
        .agg(
            calls=Count(),
            errors=Sum("errors"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cached_input_tokens=Sum("cached_input_tokens"),
            reasoning_tokens=Sum("reasoning_tokens"),
            cost_usd=Sum("cost_usd"),
            unpriced_calls=Sum("unpriced_calls"),
            latency_max_ms=Max("duration_ms"),
            latencies=Collect("duration_ms"),
            ttfts=Collect("ttft_ms"),
        )
        .final(closing_strategy=args.closing_strategy)
    )
    sdf = sdf.apply(to_row, metadata=True)
    sdf.sink(PeerStatsSink(args.database_url, args.table))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--table", default="peer_llm_stats")
    parser.add_argument("--group", default=f"bench_peer_{int(time.time())}")
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("--end-offsets", required=True, help='JSON {"partition": end offset}')
    parser.add_argument("--marker-ns", type=int, required=True, help="event time of the markers")
    parser.add_argument("--grace-s", type=float, default=300.0)
    parser.add_argument("--closing-strategy", choices=["key", "partition"], default="key")
    parser.add_argument(
        "--idle-timeout-s", type=float, default=60.0, help="fallback stop when nothing arrives"
    )
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    stats = {
        "records": 0,
        "spans": 0,
        "calls": 0,
        "rows_written": 0,
        "late_dropped": 0,
        "windows_reemitted": 0,
        "max_partition_skew_s": 0.0,
        "marker_records": 0,
        "marker_spans": 0,
        "marker_keys": 0,
        "marker_keys_not_round_tripping": 0,
        "stopped_by": "idle timeout",
        "closing_strategy": args.closing_strategy,
        "grace_s": args.grace_s,
        "first_record_at": None,
        "inputs_done_at": None,
        "markers_done_at": None,
        "last_write_at": None,
        "import_at": T_IMPORT,
        "idle_timeout_s": args.idle_timeout_s,
    }
    with tempfile.TemporaryDirectory(prefix="bench-quix-") as state_dir:
        args.state_dir = args.state_dir or state_dir
        app = build_app(args, stats)
        app.run(timeout=args.idle_timeout_s, collect=False)
    stats["exit_at"] = time.time()
    with open(args.json, "w") as handle:
        json.dump(stats, handle)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
