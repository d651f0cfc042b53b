"""Decode + normalize + price + pre-aggregate throughput, pure Python vs native.

    python -m bench.decode [--calls N] [--batch-records N] [--repeat N] [--json PATH]

The workload is realistic GenAI traffic from the simulator (every dialect,
agent sessions with tool calls, a few plain HTTP spans), encoded by the OTLP
exporter's own encoder into ``otlp_proto`` records of 50–200 spans, grouped
into Kafka-poll-sized batches. Each path decodes every batch with
``decode_batch`` (``operators.ingest.decode_batch`` and
``FastTraceDecoder.decode_batch``), single-threaded, after a warm-up; the
best of ``--repeat`` passes is reported as spans per CPU-second of the
decoding thread (= spans/s per core). Both paths' results are checked equal
once, so the figures are for the same work.

The last line of stdout is a JSON object
``{"python_spans_per_s": ..., "native_spans_per_s": ..., "spans": ..., ...}``;
``--json PATH`` also writes it to PATH. ``native_spans_per_s`` is null when
the native extension is not built.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import sys
import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from observatory.flows.simulate import DIALECTS, Simulator
from observatory.operators.ingest import decode_batch
from observatory.schemas import fastpath
from observatory.schemas.otlp import TraceDecoder
from observatory.schemas.pricing import PriceTable
from observatory.schemas.records import KafkaRecord, RecordBatch

NS = 1_000_000_000
WINDOW_NS = 60 * NS


def workload(calls: int, batch_records: int, seed: int) -> tuple[list[RecordBatch], int, int]:
    """(batches, spans, bytes) of simulated traffic ending now."""
    end_ns = time.time_ns()
    sim = Simulator(
        calls=calls,
        start_ns=end_ns - 3600 * NS,
        end_ns=end_ns,
        seed=seed,
        dialects=DIALECTS,
        keep_truth=False,
    )
    spans = sim.generate()
    rng = random.Random(seed)
    values = []
    at = 0
    while at < len(spans):
        n = rng.randint(50, 200)
        values.append(encode_spans(spans[at : at + n]).SerializeToString())
        at += n
    batches = []
    for i in range(0, len(values), batch_records):
        records = [
            KafkaRecord("otlp_spans", 0, i + j, None, value, [], 0)
            for j, value in enumerate(values[i : i + batch_records])
        ]
        batches.append(RecordBatch("otlp_spans-0", records, caught_up=False))
    return batches, len(spans), sum(map(len, values))


def best_rate(decode, batches: list[RecordBatch], spans: int, repeat: int) -> tuple[float, float]:
    """(spans per CPU-second, spans per wall-second), best of ``repeat`` passes."""
    best_cpu = best_wall = math.inf
    for _ in range(repeat):
        cpu, wall = time.thread_time(), time.perf_counter()
        for batch in batches:
            decode(batch)
        best_cpu = min(best_cpu, time.thread_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return spans / best_cpu, spans / best_wall


def check_equal(python, native) -> None:
    """The cheap half of tests/test_fastpath.py's comparison: same work done."""
    assert python.counters == native.counters, (python.counters, native.counters)
    assert python.max_event_ns == native.max_event_ns
    assert python.partials.keys() == native.partials.keys()
    assert python.sessions.keys() == native.sessions.keys()
    for key, acc in python.partials.items():
        other = native.partials[key]
        assert (acc.calls, acc.input_tokens, acc.latency.bins) == (
            other.calls,
            other.input_tokens,
            other.latency.bins,
        )
        assert math.isclose(acc.cost_usd, other.cost_usd, rel_tol=1e-12, abs_tol=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=30_000, help="LLM calls to simulate")
    parser.add_argument("--batch-records", type=int, default=200, help="records per batch")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes of the native path")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    batches, spans, size = workload(args.calls, args.batch_records, args.seed)
    records = sum(len(b.records) for b in batches)
    decoder = TraceDecoder(prices=PriceTable.bundled())
    fast = fastpath.FastTraceDecoder(decoder)
    # The simulator's objects are garbage now; keep the collector from
    # scanning the workload on every pass of either path.
    gc.collect()
    gc.freeze()
    print(
        f"workload: {spans:,} spans in {records:,} otlp_proto records "
        f"({spans / records:.0f} spans/record, {size / 2**20:.1f} MiB), {len(batches)} batches; "
        f"made in {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
    )

    def python_path(batch):
        return decode_batch(decoder, batch, WINDOW_NS)

    def native_path(batch):
        return fast.decode_batch(batch, WINDOW_NS)

    result = {
        "python_spans_per_s": None,
        "native_spans_per_s": None,
        "spans": spans,
        "records": records,
        "batches": len(batches),
        "bytes": size,
        "native": fast.native,
    }
    # Warm up (imports, price memo, allocator), then the timed passes.
    python_path(batches[0])
    cpu, wall = best_rate(python_path, batches, spans, max(1, (args.repeat + 1) // 2))
    result["python_spans_per_s"] = round(cpu)
    result["python_wall_spans_per_s"] = round(wall)
    print(f"python: {cpu:>12,.0f} spans/s per core ({wall:,.0f} wall)", file=sys.stderr)
    if fast.native:
        for batch in batches[:3]:
            check_equal(python_path(batch), native_path(batch))
        cpu, wall = best_rate(native_path, batches, spans, args.repeat)
        result["native_spans_per_s"] = round(cpu)
        result["native_wall_spans_per_s"] = round(wall)
        result["speedup"] = round(cpu / result["python_spans_per_s"], 2)
        assert fast.python_records == 0, "every record should have been decoded natively"
        print(f"native: {cpu:>12,.0f} spans/s per core ({wall:,.0f} wall)", file=sys.stderr)
    else:
        print(f"native: not available ({fast.reason})", file=sys.stderr)
    result["seconds"] = round(time.perf_counter() - started, 1)
    line = json.dumps(result)
    if args.json is not None:
        args.json.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
