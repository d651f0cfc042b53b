"""Event-to-alert latency under live load: ``python -m bench.latency [--json PATH]``.

The flow runs live (not ``--stop-at-end``) against a fresh topic while the
simulator produces paced traffic (event time = wall time) at a target rate,
with runaway agent loops started one after another. A local HTTP receiver
stands in for PagerDuty. For each loop we measure, in wall-clock time:

* from the event that crossed the limit (the loop's 25th identical tool call,
  the default ``max_identical_tool_calls``) to the webhook's arrival;
* from the loop's start (the incident start) to the webhook's arrival.

Runaway loops are used because their hard limit needs no warm-up: the
series detectors learn for an hour of event time before they may alert,
which a short live benchmark cannot give them honestly.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from observatory.flows.kafka_io import produce
from observatory.flows.receiver import AlertReceiver
from observatory.flows.simulate import SPANS_PER_CALL, make_records
from observatory.flows.traffic import NS, Incident, Simulator

URL = "postgresql://observatory:observatory@127.0.0.1:5433/observatory_test"
TABLES = ("llm_stats", "llm_stats_hourly", "agent_sessions", "pipeline_counters", "anomalies",
          "alert_outbox", "alert_deliveries")  # fmt: skip
LIMIT = 25  # detectors.runaway_loop.max_identical_tool_calls (default)


def log(text: str) -> None:
    print(f"[latency] {text}", file=sys.stderr, flush=True)


TEMPLATE_S = 20  # seconds of background traffic generated once, then replayed shifted


def _records(spans, summary) -> list[tuple[int, bytes, int]]:
    """(latest end time, protobuf record, spans in it) of records of up to 50 spans."""
    out = []
    for value, _headers, count in make_records(
        spans,
        random.Random(1),
        encoding="otlp_proto",
        max_spans=50,
        malformed_rate=0.0,
        summary=summary,
    ):
        data = TracesData()
        data.ParseFromString(value)
        latest = max(
            s.end_time_unix_nano
            for rs in data.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        )
        out.append((latest, value, count))
    return out


def _shifted(value: bytes, delta_ns: int) -> bytes:
    """The same record with every span moved ``delta_ns`` later (event time = wall time)."""
    data = TracesData()
    data.ParseFromString(value)
    for resource_spans in data.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.start_time_unix_nano += delta_ns
                span.end_time_unix_nano += delta_ns
    return data.SerializeToString()


def produce_paced(
    background, loops, start_ns: int, duration_s: float, topic: str, bootstrap: str
) -> int:
    """Produce the background template again and again, and the loops, each record
    when the wall clock reaches its latest span end. Returns the spans produced."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    period_ns = TEMPLATE_S * NS
    periods = int(duration_s // TEMPLATE_S) + 1

    def background_records():
        for period in range(periods):
            for latest, value, count in background:
                yield latest + period * period_ns, value, period * period_ns, count

    def loop_records():
        for latest, value, count in loops:
            yield latest, value, 0, count

    spans = 0
    end_ns = start_ns + int(duration_s * NS)
    for at, value, delta, count in heapq.merge(background_records(), loop_records()):
        if at > end_ns:
            break
        delay = at / NS - time.time()
        if delay > 0:
            time.sleep(delay)
        record = _shifted(value, delta) if delta else value
        produce(producer, topic, record, [])
        spans += count
    producer.flush(30)
    return spans


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans-per-second", type=float, default=10_000)
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--database-url", default=URL)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="observatory-latency-"))
    topic = f"bench_latency_{int(time.time())}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(30)
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        from observatory.schemas import migrations

        migrations.apply(conn, progress=lambda _: None)
        conn.execute("TRUNCATE " + ", ".join(TABLES))

    receiver = AlertReceiver().start()
    config = {
        "kafka": {"bootstrap_servers": args.bootstrap, "topics": {"spans": topic}},
        "database": {"url": args.database_url},
        "pipeline": {"recovery_dir": str(work / "recovery")},
        "alerts": {
            "routes": {
                "pd": {
                    "type": "pagerduty",
                    "routing_key_env": "BENCH_PD_KEY",
                    "url": f"{receiver.url}/pagerduty",
                }
            },
            "poll_interval_seconds": 0.5,
        },
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "BENCH_PD_KEY": "b" * 32}
    flow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "observatory.flows.cli",
            "run",
            "--config",
            str(work / "config.yaml"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "flow.log", "w"),  # noqa: SIM115 - closed with the process
    )
    time.sleep(5)  # let the flow connect before traffic starts

    start = time.time() + 40  # time to prepare the traffic
    step_s = 2.0  # one identical tool call every 2 s (30 a minute)
    loops = [
        Incident(
            "runaway_loop",
            int((start + 45 + 75 * i) * NS),
            int((start + 45 + 75 * i + 120) * NS),
            60 / step_s,
            "tenant-a",
            "chat-api",
            agent="coding-agent",
        )
        for i in range(args.loops)
    ]
    duration_s = 45 + 75 * (args.loops - 1) + 120 + 90
    # Background: TEMPLATE_S seconds generated once with the SDK (it cannot make
    # 10k spans/s live on this machine), replayed with shifted timestamps.
    rate = {"calls_per_minute": args.spans_per_second * 60 / SPANS_PER_CALL}
    template = Simulator(
        start_ns=int(start * NS),
        end_ns=int((start + TEMPLATE_S) * NS),
        seed=5,
        keep_truth=False,
        **rate,
    )
    template_end = int((start + TEMPLATE_S) * NS)
    # Only whole records inside the template, in time order, so periods do not overlap.
    background = sorted(
        r for r in _records(template.stream(), template.summary) if r[0] <= template_end
    )
    loop_sim = Simulator(
        start_ns=int(start * NS),
        end_ns=int((start + duration_s) * NS),
        calls_per_minute=0.001,
        incidents=loops,
        seed=6,
        keep_truth=False,
    )
    loop_records = _records(loop_sim.stream(), loop_sim.summary)
    lag = time.time() - start
    if lag > 0:
        log(f"preparing the traffic took {lag:.0f}s too long; starting late")
    log(
        f"{duration_s:.0f}s of live traffic at {args.spans_per_second:,.0f} spans/s with "
        f"{len(loops)} runaway loops; flow log: {work / 'flow.log'}"
    )
    started = time.monotonic()
    try:
        produced = produce_paced(
            background, loop_records, int(start * NS), duration_s, topic, args.bootstrap
        )
        achieved = produced / (time.monotonic() - started)
        time.sleep(20)  # the last windows close after the watermark delay
    finally:
        flow.terminate()
        flow.wait(30)
        receiver.stop()
        admin.delete_topics([topic])

    triggers = [
        m for m in receiver.pagerduty_triggers() if m.body["payload"].get("class") == "runaway_loop"
    ]
    from_limit, from_start = [], []
    for incident in loops:
        start_s = incident.start_ns / NS
        hits = [m.at for m in triggers if start_s <= _opened(m) <= incident.end_ns / NS + 120]
        if hits:
            first = min(hits)
            from_start.append((first - start_s) * 1000)
            from_limit.append((first - (start_s + LIMIT * step_s)) * 1000)
    result = {
        "spans_per_s_target": args.spans_per_second,
        "spans_per_s_produced": round(achieved),
        "loops": len(loops),
        "detected": len(from_limit),
        "p50_ms": percentile(from_limit, 0.5),
        "p95_ms": percentile(from_limit, 0.95),
        "from_incident_start_p50_ms": percentile(from_start, 0.5),
        "from_incident_start_p95_ms": percentile(from_start, 0.95),
        "event": "25th identical tool call of a loop (the hard limit) -> PagerDuty webhook",
    }
    log(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if from_limit else 1


def _opened(message) -> float:
    from datetime import datetime

    details = message.body["payload"].get("custom_details") or {}
    return datetime.fromisoformat(details["window_end"].replace("Z", "+00:00")).timestamp()


if __name__ == "__main__":
    raise SystemExit(main())
