"""``observatory simulate``: realistic multi-tenant GenAI agent traffic into Kafka.

Spans come from :mod:`observatory.flows.traffic` (the real OpenTelemetry SDK,
six attribute dialects, labelled incidents) and are encoded by the OTLP
exporter's own encoder, then published the way the Collector's Kafka exporter
does: one record = one ``ExportTraceServiceRequest`` of 1..N spans, in
``otlp_proto`` or ``otlp_json``, key empty.

Two modes: a replay of a simulated time range as fast as possible (default),
or ``--pace``: live traffic at a target rate with event time = wall time.

With ``--ground-truth DIR`` it also writes every call it meant in canonical
form (``calls.csv.gz``), the incidents (``incidents.json``) and what it
produced (``summary.json``), so results can be checked independently.
"""

from __future__ import annotations

import argparse
import base64
import csv
import gzip
import json
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

from observatory.flows.traffic import (
    DIALECTS,
    INCIDENT_KINDS,
    NS,
    Incident,
    Simulator,
    Summary,
    plan_incidents,
)
from observatory.schemas.records import LlmCall

__all__ = [
    "DIALECTS",
    "NS",
    "Incident",
    "Simulator",
    "Summary",
    "make_records",
    "to_otlp_json",
]

#: Spans per LLM call in the traffic model (LLM + 0.6 tool + agent root + some HTTP).
SPANS_PER_CALL = 1.93


def add_arguments(parser: argparse.ArgumentParser) -> None:
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--calls", type=int, default=None, help="LLM calls over the range")
    rate.add_argument("--calls-per-minute", type=float, default=None, help="mean LLM call rate")
    rate.add_argument(
        "--spans-per-second", type=float, default=None, help="mean span rate (with --pace)"
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="event-time range (minutes)")
    parser.add_argument(
        "--end", type=float, default=None, help="event time of the end (epoch s; default now)"
    )
    parser.add_argument(
        "--pace",
        action="store_true",
        help="live: produce each span when the wall clock reaches its end time",
    )
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument(
        "--encoding", choices=["otlp_proto", "otlp_json", "mixed"], default="otlp_proto"
    )
    parser.add_argument(
        "--dialects", default=",".join(DIALECTS), help=f"comma-separated subset of {DIALECTS}"
    )
    parser.add_argument("--max-spans-per-record", type=int, default=20)
    parser.add_argument("--malformed-rate", type=float, default=0.0, help="share of bad records")
    parser.add_argument("--non-genai-rate", type=float, default=0.05, help="extra plain HTTP spans")
    parser.add_argument(
        "--incidents",
        default="",
        help=f"comma-separated kinds to inject ({','.join(INCIDENT_KINDS)}), or 'all'",
    )
    parser.add_argument("--incidents-per-kind", type=int, default=1)
    parser.add_argument("--incident-minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--topic", default=None, help="default: kafka.topics.spans")
    parser.add_argument(
        "--ground-truth", default=None, help="directory for calls.csv.gz, incidents.json, ..."
    )
    parser.add_argument("--quiet", action="store_true")


# --- records -------------------------------------------------------------------------


def to_otlp_json(request) -> bytes:
    """OTLP/JSON as the spec wants it: camelCase, hex ids, int enums, int64 as strings."""
    data = MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(data, separators=(",", ":")).encode()


def malformed_record(rng: random.Random, good: bytes) -> bytes:
    kind = rng.choice(("random", "truncated", "json"))
    if kind == "random":
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
    if kind == "truncated" and len(good) > 4:
        return good[: rng.randint(1, len(good) - 1)]
    return b'{"resourceSpans": [ {"resource": '


def make_records(
    spans: Iterable[ReadableSpan],
    rng: random.Random,
    *,
    encoding: str,
    max_spans: int,
    malformed_rate: float,
    summary: Summary,
) -> Iterator[tuple[bytes, list[tuple[str, bytes]], int]]:
    """Yield (value, headers, span count) records of 1..max_spans spans each.

    A malformed record (span count 0) follows a good one with probability
    ``malformed_rate``.
    """
    iterator = iter(spans)
    while True:
        chunk = []
        for span in iterator:
            chunk.append(span)
            if len(chunk) >= rng.randint(1, max_spans):
                break
        if not chunk:
            return
        request = encode_spans(chunk)
        enc = encoding if encoding != "mixed" else rng.choice(("otlp_proto", "otlp_json"))
        if enc == "otlp_json":
            value, headers = to_otlp_json(request), [("content-type", b"application/json")]
        else:
            value, headers = request.SerializeToString(), []
        summary.records += 1
        yield value, headers, len(chunk)
        if malformed_rate and rng.random() < malformed_rate:
            summary.records += 1
            summary.malformed_records += 1
            yield malformed_record(rng, value), [], 0


def publish(
    spans: Iterable[ReadableSpan],
    topic: str,
    producer_config: dict,
    *,
    summary: Summary,
    seed: int,
    encoding: str = "otlp_proto",
    max_spans: int = 20,
    malformed_rate: float = 0.0,
    on_record: Callable[[int], None] | None = None,
) -> int:
    """Encode spans into Collector-style records and produce them; returns the
    number of records not delivered after the final flush (0 = all delivered).
    ``on_record`` is told the span count of each record (progress output)."""
    from confluent_kafka import Producer

    from observatory.flows.kafka_io import produce

    producer = Producer(
        {
            "linger.ms": 20,
            "compression.type": "lz4",
            "message.max.bytes": 10_000_000,
            **producer_config,
        }
    )
    for value, headers, n_spans in make_records(
        spans,
        random.Random(seed),
        encoding=encoding,
        max_spans=max_spans,
        malformed_rate=malformed_rate,
        summary=summary,
    ):
        produce(producer, topic, value, headers)
        if on_record is not None:
            on_record(n_spans)
    return producer.flush(60)


TRUTH_COLUMNS = (
    "end_ns", "duration_ms", "trace_id", "tenant", "service", "provider", "model", "operation",
    "agent", "tool", "session_id", "input_tokens", "output_tokens", "cached_input_tokens",
    "reasoning_tokens", "cost_usd", "ttft_ms", "is_error",
)  # fmt: skip


def write_ground_truth(
    directory: Path, calls: list[LlmCall], summary: Summary, incidents: Iterable[Incident] = ()
) -> None:
    directory.mkdir(parents=True, exist_ok=True)

    def cell(value):
        if value is None:
            return ""
        return repr(value) if isinstance(value, float) else value

    with gzip.open(directory / "calls.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TRUTH_COLUMNS)
        for call in calls:
            writer.writerow([cell(getattr(call, c)) for c in TRUTH_COLUMNS])
    (directory / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    # The exact per-minute aggregates these calls must produce (computed with pandas,
    # independently of the pipeline), for checking any run against them.
    from observatory.flows.groundtruth import calls_frame, window_stats

    if calls:
        window_stats(calls_frame(calls)).to_csv(
            directory / "expected_llm_stats.csv.gz", index=False, compression="gzip"
        )
    (directory / "incidents.json").write_text(
        json.dumps([i.as_dict() for i in incidents], indent=2)
    )


# --- the command -----------------------------------------------------------------------


def _incident_kinds(text: str) -> list[str]:
    if not text:
        return []
    if text == "all":
        return list(INCIDENT_KINDS)
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(INCIDENT_KINDS))
    if unknown:
        raise ValueError(f"unknown incident kind(s) {unknown}; choose from {INCIDENT_KINDS}")
    return kinds


def build_simulator(config, args: argparse.Namespace) -> Simulator:
    from observatory.flows.pipeline import make_decoder

    dialects = [d.strip() for d in args.dialects.split(",") if d.strip()]
    unknown = sorted(set(dialects) - set(DIALECTS))
    if unknown:
        raise ValueError(f"unknown dialect(s) {unknown}; choose from {DIALECTS}")
    now = time.time()
    if args.pace:
        start_s = now if args.end is None else args.end - args.minutes * 60
    else:
        start_s = (args.end if args.end is not None else now) - args.minutes * 60
    start_ns = int(start_s * NS)
    end_ns = start_ns + int(args.minutes * 60 * NS)
    rng = random.Random(args.seed + 1)
    tenants = [f"tenant-{chr(ord('a') + i)}" for i in range(args.tenants)]
    kinds = _incident_kinds(args.incidents)
    incidents = (
        plan_incidents(
            rng,
            start_ns=start_ns,
            end_ns=end_ns,
            kinds=kinds,
            per_kind=args.incidents_per_kind,
            tenants=tenants,
            duration_ns=int(args.incident_minutes * 60 * NS),
            quiet_head_ns=min(60 * 60 * NS, (end_ns - start_ns) // 4),
        )
        if kinds
        else []
    )
    if args.spans_per_second:
        rate = {"calls_per_minute": args.spans_per_second * 60 / SPANS_PER_CALL}
    elif args.calls_per_minute:
        rate = {"calls_per_minute": args.calls_per_minute}
    else:
        rate = {"calls": args.calls or 5000}
    return Simulator(
        start_ns=start_ns,
        end_ns=end_ns,
        tenants=args.tenants,
        dialects=dialects,
        seed=args.seed,
        non_genai_rate=args.non_genai_rate,
        incidents=incidents,
        prices=make_decoder(config, config.kafka.topics.spans).prices,
        keep_truth=bool(args.ground_truth),
        **rate,
    )


def run_simulation(config, args: argparse.Namespace) -> int:
    from observatory.flows.kafka_io import client_config

    try:
        sim = build_simulator(config, args)
    except ValueError as exc:
        print(f"observatory simulate: {exc}", file=sys.stderr)
        return 2
    topic = args.topic or config.kafka.topics.spans
    expected = int(sim.calls_per_minute * (sim.end_ns - sim.start_ns) / 60e9 * SPANS_PER_CALL)
    progress = None if args.quiet else _progress(expected, paced=args.pace)
    started = time.monotonic()
    remaining = publish(
        _paced(sim.stream()) if args.pace else sim.stream(),
        topic,
        client_config(config.kafka.bootstrap_servers, config.kafka.client),
        summary=sim.summary,
        seed=args.seed,
        encoding=args.encoding,
        max_spans=args.max_spans_per_record,
        malformed_rate=args.malformed_rate,
        on_record=progress.update if progress is not None else None,
    )
    if progress is not None:
        progress.close()
    if remaining:
        print(f"observatory simulate: {remaining} records not delivered", file=sys.stderr)
        return 1
    if args.ground_truth:
        write_ground_truth(Path(args.ground_truth), sim.truth, sim.summary, sim.incidents)
    s = sim.summary
    print(
        f"produced {s.records} records ({s.malformed_records} malformed) holding {s.spans} spans "
        f"({s.genai_spans} GenAI, {s.non_genai_spans} plain) to {topic} "
        f"in {time.monotonic() - started:.1f}s"
        + (f"; incidents: {', '.join(i.kind for i in sim.incidents)}" if sim.incidents else "")
    )
    return 0


def _paced(spans: Iterable[ReadableSpan]) -> Iterator[ReadableSpan]:
    """Hold each span until the wall clock reaches its end time."""
    for span in spans:
        delay = span.end_time / NS - time.time()
        if delay > 0:
            time.sleep(delay)
        yield span


def _progress(total: int, *, paced: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="span",
        desc="simulate (live)" if paced else "simulate",
        file=sys.stderr,
        mininterval=0.5,
    )
