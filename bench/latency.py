"""Event-to-alert latency under live load: ``python -m bench.latency [--json PATH]``.

The flow runs live (not ``--stop-at-end``) against a fresh topic while paced
traffic (event time = wall time) flows at a target rate, with runaway agent
loops started one after another. A local HTTP receiver stands in for
PagerDuty. For each loop we measure, in wall-clock time, until its webhook
arrives:

* **event-to-alert**: from the loop's 25th identical tool call (the default
  ``max_identical_tool_calls``: the event that makes it alertable) — or, if
  the learned model fired in an earlier window, from the first loop call of
  that window;
* from the alert's window end (what the watermark delay and the pipeline add);
* from the loop's start (the incident start).

Verdicts on live sessions are taken at window boundaries, so by design an
alert comes one watermark delay (10 s) plus processing after the end of the
window holding its event: between that and a window more.

Runaway loops are used because their hard limit needs no warm-up: the
series detectors learn for an hour of event time before they may alert,
which a short live benchmark cannot give them honestly.

Tables go to a fresh schema of the benchmark database (``bench.common``), so
the test suite's tables are never touched.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from bench import common
from observatory.flows.kafka_io import produce
from observatory.flows.receiver import AlertReceiver
from observatory.flows.simulate import SPANS_PER_CALL, make_records
from observatory.flows.traffic import NS, Incident, Simulator, seasonal_factor

LIMIT = 25  # detectors.runaway_loop.max_identical_tool_calls (the default)
WINDOW_S = 60  # pipeline.window_seconds (the default)
LOOP_S = 70  # each loop runs this long: its 25th identical call (the hard limit) comes at ~50 s
LOOP_GAP_S = 80  # loops do not overlap, so each loop's spans are told apart by time


def log(text: str) -> None:
    print(f"[latency] {text}", file=sys.stderr, flush=True)


_U64 = struct.Struct("<Q")
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


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


#: Where the fixed64 timestamps sit: TracesData.resource_spans(1) → ResourceSpans.
#: scope_spans(2) → ScopeSpans.spans(2) → Span.start(7)/end(8), Span.events(11) →
#: Event.time(1).
_DESCEND = {0: {1: 1}, 1: {2: 2}, 2: {2: 3}, 3: {11: 4}}
_STAMPS = {3: (7, 8), 4: (1,)}


def timestamp_offsets(buf: bytes, start: int = 0, end: int | None = None, level: int = 0):
    """Byte offsets of every span/event timestamp in an OTLP ``TracesData`` record."""
    end = len(buf) if end is None else end
    pos, out = start, []
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            if field in _STAMPS.get(level, ()):
                out.append(pos)
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            child = _DESCEND.get(level, {}).get(field)
            if child is not None:
                out.extend(timestamp_offsets(buf, pos, pos + length, child))
            pos += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


def shifted(value: bytes, offsets: list[int], delta_ns: int) -> bytes:
    """The same record with every span and event moved ``delta_ns`` later.

    Patches the fixed64 fields in place: re-serializing 10k spans a second
    in Python would take the producer a whole core.

    >>> from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
    >>> data = TracesData()
    >>> span = data.resource_spans.add().scope_spans.add().spans.add()
    >>> span.start_time_unix_nano, span.end_time_unix_nano = 100, 200
    >>> span.events.add().time_unix_nano = 150
    >>> record = data.SerializeToString()
    >>> moved = TracesData.FromString(shifted(record, timestamp_offsets(record), 1000))
    >>> s = moved.resource_spans[0].scope_spans[0].spans[0]
    >>> s.start_time_unix_nano, s.end_time_unix_nano, s.events[0].time_unix_nano
    (1100, 1200, 1150)
    """
    out = bytearray(value)
    for at in offsets:
        (stamp,) = _U64.unpack_from(out, at)
        _U64.pack_into(out, at, stamp + delta_ns)
    return bytes(out)


def thin_to(records: list, spans: float, seed: int = 3) -> list:
    """A random subset of the records, in their order, holding about ``spans`` spans.

    >>> records = [(t, b"", 50) for t in range(100)]
    >>> kept = thin_to(records, 2000)
    >>> sum(r[2] for r in kept), kept == sorted(kept)
    (2000, True)
    """
    total = sum(r[2] for r in records)
    if total <= spans:
        return records
    rng = random.Random(seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    keep, count = set(), 0
    for i in order:
        if count >= spans:
            break
        keep.add(i)
        count += records[i][2]
    return [r for i, r in enumerate(records) if i in keep]


def produce_paced(
    background, loops, start_ns: int, duration_s: float, topic: str, bootstrap: str
) -> int:
    """Produce the background template again and again, and the loops, each record
    when the wall clock reaches its latest span end. Returns the spans produced."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    period_ns = TEMPLATE_S * NS
    periods = int(duration_s // TEMPLATE_S) + 1

    offsets = {id(value): timestamp_offsets(value) for _, value, _ in background}

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
        record = shifted(value, offsets[id(value)], delta) if delta else value
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
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="observatory-latency-"))
    topic = f"bench_latency_{int(time.time())}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(30)
    schema = f"bench_latency_{int(time.time())}_{os.getpid()}"
    database_url = common.create_schema(schema)
    common.migrate(database_url)

    receiver = AlertReceiver().start()
    config = {
        "kafka": {"bootstrap_servers": args.bootstrap, "topics": {"spans": topic}},
        "database": {"url": database_url},
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

    start = time.time() + 75  # time to prepare the traffic
    step_s = 2.0  # one identical tool call every 2 s (30 a minute)
    loops = [
        Incident(
            "runaway_loop",
            int((start + 45 + LOOP_GAP_S * i) * NS),
            int((start + 45 + LOOP_GAP_S * i + LOOP_S) * NS),
            60 / step_s,
            "tenant-a",
            "chat-api",
            agent="coding-agent",
        )
        for i in range(args.loops)
    ]
    duration_s = 45 + LOOP_GAP_S * (args.loops - 1) + LOOP_S + 40
    # Background: TEMPLATE_S seconds generated once with the SDK (it cannot make
    # 10k spans/s live on this machine), replayed with shifted timestamps.
    # The daily cycle and the calls' varying span counts make the simulator's rate
    # approximate: generate more than needed, then keep records up to the target.
    wanted = args.spans_per_second * TEMPLATE_S
    template = Simulator(
        start_ns=int(start * NS),
        end_ns=int((start + TEMPLATE_S) * NS),
        seed=5,
        keep_truth=False,
        calls_per_minute=1.6
        * args.spans_per_second
        * 60
        / SPANS_PER_CALL
        / seasonal_factor(int(start * NS)),
    )
    template_end = int((start + TEMPLATE_S) * NS)
    # Only whole records inside the template, in time order, so periods do not overlap.
    background = thin_to(
        sorted(r for r in _records(template.stream(), template.summary) if r[0] <= template_end),
        wanted,
    )
    log(f"background template: {sum(r[2] for r in background) / TEMPLATE_S:,.0f} spans/s")
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
        common.drop_schemas([schema])

    triggers = [
        m for m in receiver.pagerduty_triggers() if m.body["payload"].get("class") == "runaway_loop"
    ]
    # Each loop is one session: its tool calls, and the alert that names it.
    calls_by_session: dict[str, list[tuple[float, bool]]] = {}
    for _, value, _ in loop_records:
        for session, end, is_tool in _loop_calls(value):
            calls_by_session.setdefault(session, []).append((end, is_tool))
    event_to_alert, from_window_end, from_start = [], [], []
    for incident in loops:
        start_s, end_s = incident.start_ns / NS, incident.end_ns / NS
        sessions = [s for s, calls in calls_by_session.items() if start_s <= min(calls)[0] <= end_s]
        hits = sorted(
            (m.at, _window_end(m), _details(m).get("expected"), m.body["payload"]["summary"])
            for m in triggers
            if _details(m).get("session_id") in sessions
        )
        if not hits:
            continue
        arrived, window_end, expected, summary = hits[0]
        calls = sorted(c for s in sessions for c in calls_by_session[s])
        crossing = _crossing(calls, window_end, expected, summary)
        event_to_alert.append((arrived - crossing) * 1000)
        from_window_end.append((arrived - window_end) * 1000)
        from_start.append((arrived - start_s) * 1000)
    result = {
        "spans_per_s_target": args.spans_per_second,
        "spans_per_s_produced": round(achieved),
        "loops": len(loops),
        "detected": len(event_to_alert),
        "p50_ms": percentile(event_to_alert, 0.5),
        "p95_ms": percentile(event_to_alert, 0.95),
        "from_window_end_p50_ms": percentile(from_window_end, 0.5),
        "from_window_end_p95_ms": percentile(from_window_end, 0.95),
        "from_incident_start_p50_ms": percentile(from_start, 0.5),
        "from_incident_start_p95_ms": percentile(from_start, 0.95),
        "event": "a loop's 25th identical tool call (the hard limit) -> PagerDuty webhook received",
        "window_seconds": WINDOW_S,
        "watermark_delay_seconds": 10,
    }
    log(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if event_to_alert else 1


def _window_end(message) -> float:
    from datetime import datetime

    details = _details(message)
    return datetime.fromisoformat(details["window_end"].replace("Z", "+00:00")).timestamp()


def _loop_calls(value: bytes) -> list[tuple[str, float, bool]]:
    """(session id, end time, is a tool call) of the calls in a record that name a session."""
    data = TracesData.FromString(value)
    out = []
    for resource_spans in data.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                session = next(
                    (a.value.string_value for a in span.attributes
                     if a.key == "gen_ai.conversation.id"),
                    "",
                )  # fmt: skip
                if session and not span.name.startswith("invoke_agent"):
                    is_tool = span.name.startswith("execute_tool")
                    out.append((session, span.end_time_unix_nano / NS, is_tool))
    return out


def _details(message) -> dict:
    return message.body["payload"].get("custom_details") or {}


def _crossing(calls: list[tuple[float, bool]], window_end: float, limit, summary: str) -> float:
    """When the loop became alertable, from its (end time, is tool call) calls.

    Its LIMIT-th identical tool call (the hard limit) if the alerting verdict
    saw it; otherwise a learned limit fired first: then the call that took
    the calls of the last minute, or the identical run, past the alert's limit.

    >>> loop = [(float(t), t % 4 == 2) for t in range(0, 120)]  # a call a second
    >>> _crossing(loop, 120.0, 30.0, "")  # 25th tool call at 98 s
    98.0
    >>> _crossing(loop, 60.0, 30.0, "calls_last_minute 61 > learned limit 30")
    30.0
    >>> _crossing(loop, 60.0, 10.0, "current_identical_run 15 > learned limit 10")
    42.0
    """
    tools = [t for t, is_tool in calls if is_tool]
    if len(tools) >= LIMIT and tools[LIMIT - 1] <= window_end:
        return tools[LIMIT - 1]
    ends = [t for t, _ in calls]
    if limit is not None and "current_identical_run" in summary:
        return tools[min(int(float(limit)), len(tools) - 1)]
    if limit is not None and "calls_last_minute" in summary:
        for i, t in enumerate(ends):
            in_minute = i + 1 - bisect.bisect_right(ends, t - WINDOW_S)
            if in_minute > float(limit):
                return t
    return min(t for t in ends if t > window_end - WINDOW_S)  # conservative


if __name__ == "__main__":
    raise SystemExit(main())
