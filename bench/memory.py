"""Memory of the stateful step: N active series and M live agent sessions.

Builds the state the flow's ``aggregate_event_time_windows`` step holds, with
the flow's own code and default settings: calls are pre-aggregated per source
batch (:func:`preaggregate`, :func:`session_partials`), routed to 16 key shards
(:func:`route_to_shards`) and merged by :meth:`WindowShard.on_batch`, for
``--minutes`` minutes of event time over 4 source partitions. The watermark
moves as in the flow (10 s delay), so every series holds the minute windows
still inside the allowed lateness (300 s: about 6 per series) plus its open
hour, and every session stays live (timeout 900 s > the range).

Reports the process's RSS (VmRSS after a GC; peak VmHWM) next to its RSS
before any state was built, and the pickle size of all the shards' snapshots
(what Bytewax stores every snapshot interval) with the time it takes.

    python -m bench.memory --series 10000 --sessions 50000 --json OUT
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import time

NS = 1_000_000_000
OPERATIONS = ("chat", "text_completion", "embeddings", "execute_tool", "invoke_agent")
MODELS = (
    ("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"), ("gcp.gemini", "gemini-2.5-flash"),
    ("mistral_ai", "mistral-small"), ("deepseek", "deepseek-chat"), ("x_ai", "grok-3-mini"),
)  # fmt: skip
TOOLS = ("search_web", "read_file", "run_sql", "call_api", "summarize")


def _rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def series_keys(n: int) -> list[tuple[str, str, str, str, str]]:
    """n distinct (tenant, service, provider, model, operation) keys (one tool each)."""
    per_tenant = 5 * len(MODELS) * len(OPERATIONS)  # services × models × operations
    tenants = math.ceil(n / per_tenant)
    keys = []
    for t in range(tenants):
        for s in range(5):
            for provider, model in MODELS:
                for op in OPERATIONS:
                    keys.append((f"tenant-{t:03d}", f"service-{s}", provider, model, op))
    return keys[:n]


def build(
    *,
    series: int,
    sessions: int,
    minutes: int,
    calls_per_series_minute: int,
    shards: int,
    partitions: int,
    seed: int,
) -> dict:
    from observatory.operators.ingest import DecodedBatch, route_to_shards
    from observatory.operators.sessions import session_partials
    from observatory.operators.stats import preaggregate
    from observatory.operators.windows import WindowShard
    from observatory.schemas.records import DecodeCounters, LlmCall

    gc.collect()
    baseline_kib = _rss_kib()
    rng = random.Random(seed)
    keys = series_keys(series)
    tenants = sorted({k[0] for k in keys})
    # Sessions belong to tenants round-robin; each call picks one of its tenant's sessions.
    sessions_of: dict[str, list[str]] = {t: [] for t in tenants}
    for j in range(sessions):
        sessions_of[tenants[j % len(tenants)]].append(f"sess-{j:08x}")
    cursor = dict.fromkeys(tenants, 0)
    part_ids = [f"bench_memory-{p}" for p in range(partitions)]
    workers = [
        WindowShard(
            window_s=60,
            watermark_delay_s=10,
            allowed_lateness_s=300,
            idle_timeout_s=5,
            partitions=part_ids,
            session_timeout_s=900,
            max_sessions=200_000,
            name=f"shard-{i:04d}",
        )
        for i in range(shards)
    ]
    # Start on an hour boundary so every series has exactly one open hour.
    start_ns = (int(time.time()) // 3600 - 3) * 3600 * NS
    window_ns = 60 * NS
    emitted = 0
    total_calls = 0
    started = time.monotonic()
    for minute in range(minutes):
        minute_ns = start_ns + minute * window_ns
        calls_by_part: list[list[LlmCall]] = [[] for _ in part_ids]
        for index, key in enumerate(keys):
            tenant, service, provider, model, op = key
            pool = sessions_of[tenant]
            for _ in range(calls_per_series_minute):
                sid = pool[cursor[tenant] % len(pool)]
                cursor[tenant] += 1
                duration = rng.lognormvariate(math.log(800), 0.5)
                is_tool = op == "execute_tool"
                call = LlmCall(
                    end_ns=minute_ns + rng.randrange(window_ns),
                    duration_ms=duration,
                    trace_id=f"{rng.getrandbits(128):032x}",
                    tenant=tenant,
                    service=service,
                    provider=provider,
                    model=model,
                    operation=op,
                    agent="support-agent",
                    # One tool per series: the tool is part of the stats key.
                    tool=TOOLS[index % len(TOOLS)] if is_tool else "",
                    tool_args_hash=f"{rng.getrandbits(64):016x}" if is_tool else "",
                    session_id=sid,
                    input_tokens=0 if is_tool else rng.randrange(100, 4000),
                    output_tokens=0 if is_tool else rng.randrange(10, 800),
                    cached_input_tokens=0,
                    cost_usd=None if is_tool else rng.random() * 0.01,
                    ttft_ms=duration * 0.3 if op == "chat" else None,
                    is_error=rng.random() < 0.02,
                )
                calls_by_part[index % len(part_ids)].append(call)
        for part_id, calls in zip(part_ids, calls_by_part, strict=True):
            calls.sort(key=lambda c: c.end_ns)
            # A source batch is what one poll returns: here a quarter minute of a partition.
            for q in range(4):
                chunk = calls[q * len(calls) // 4 : (q + 1) * len(calls) // 4]
                if not chunk:
                    continue
                decoded = DecodedBatch(part_id, False)
                decoded.max_event_ns = max(c.end_ns for c in chunk)
                decoded.partials = preaggregate(chunk, window_ns)
                decoded.sessions = session_partials(chunk)
                decoded.counters = DecodeCounters(records=1, spans=len(chunk))
                for name, item in route_to_shards(decoded, shards):
                    emitted += len(workers[int(name.rsplit("-", 1)[1])].on_batch([item]))
                total_calls += len(chunk)
        del calls_by_part
    build_seconds = time.monotonic() - started
    gc.collect()
    rss_kib = _rss_kib()
    hwm_kib = _rss_kib("VmHWM")
    started = time.monotonic()
    snapshot_bytes = sum(len(w.snapshot()) for w in workers)
    snapshot_seconds = time.monotonic() - started
    states = [w.state for w in workers]
    live_series = len({k for s in states for window in s.minutes.values() for k in window})
    hourly_series = len({k for s in states for hour in s.hours.values() for k in hour})
    minute_windows = sum(len(window) for s in states for window in s.minutes.values())
    live_sessions = sum(len(s.sessions) for s in states)
    return {
        "series": live_series,
        "hourly_series": hourly_series,
        "minute_window_accumulators": minute_windows,
        "sessions": live_sessions,
        "calls_fed": total_calls,
        "rows_emitted": emitted,
        "minutes": minutes,
        "shards": shards,
        "baseline_rss_mib": baseline_kib / 1024,
        "rss_mib": rss_kib / 1024,
        "peak_rss_mib": hwm_kib / 1024,
        "state_rss_mib": (rss_kib - baseline_kib) / 1024,
        "snapshot_bytes": snapshot_bytes,
        "snapshot_mib": snapshot_bytes / 1024 / 1024,
        "snapshot_seconds": snapshot_seconds,
        "build_seconds": build_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=50_000)
    parser.add_argument("--minutes", type=int, default=7, help="event-time minutes fed")
    parser.add_argument("--calls-per-series-minute", type=int, default=5)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    result = build(
        series=args.series,
        sessions=args.sessions,
        minutes=args.minutes,
        calls_per_series_minute=args.calls_per_series_minute,
        shards=args.shards,
        partitions=args.partitions,
        seed=args.seed,
    )
    with open(args.json, "w") as handle:
        json.dump(result, handle)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
