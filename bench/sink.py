"""Which upsert is faster into TimescaleDB: COPY into a temp table + one INSERT … ON
CONFLICT (what the sink does), or a pipelined executemany of INSERT … ON CONFLICT?

    python -m bench.sink [--rows N] [--database-url URL]

Writes each batch twice (the second time every row conflicts, as replays do)
into a scratch copy of ``llm_stats`` and prints rows/s for both methods.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from observatory.operators.stats import StatsRow
from observatory.sinks.timescale import LLM_STATS, TableSpec, TimescaleWriter, _stats_values

URL = "postgresql://observatory:observatory@127.0.0.1:5433/observatory_test"


def rows(n: int) -> list[StatsRow]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        StatsRow(
            bucket=start + timedelta(minutes=i // 500),
            window_seconds=60,
            tenant=f"t{i % 7}",
            service=f"s{i % 5}",
            provider="openai",
            model=f"m{i % 500}",
            operation="chat",
            tool="",
            calls=i,
            errors=0,
            input_tokens=10,
            output_tokens=5,
            cached_input_tokens=0,
            reasoning_tokens=0,
            cost_usd=0.1,
            unpriced_calls=0,
            latency_p50_ms=1.0,
            latency_p95_ms=2.0,
            latency_p99_ms=3.0,
            latency_max_ms=4.0,
            ttft_p95_ms=None,
            exemplar_trace_ids=("ab",),
        )
        for i in range(n)
    ]


def executemany_upsert(conn: psycopg.Connection, spec: TableSpec, batch: list[StatsRow]) -> None:
    columns = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    query = sql.SQL(
        "INSERT INTO {t} ({c}) VALUES ({v}) ON CONFLICT ({k}) DO UPDATE SET {u}"
    ).format(
        t=sql.Identifier(spec.table),
        c=columns,
        v=sql.SQL(", ").join(sql.Placeholder() * len(spec.columns)),
        k=sql.SQL(", ").join(map(sql.Identifier, spec.key)),
        u=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c in spec.columns
            if c not in spec.key
        ),
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(query, [_stats_values(r) for r in batch])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--database-url", default=URL)
    args = parser.parse_args()
    data = rows(args.rows)
    scratch = TableSpec("bench_llm_stats", LLM_STATS.columns, LLM_STATS.key)
    results = {}
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_llm_stats")
        conn.execute("CREATE TABLE bench_llm_stats (LIKE llm_stats INCLUDING ALL)")
        for method in ("copy_then_upsert", "executemany_pipelined"):
            conn.execute("TRUNCATE bench_llm_stats")
            writer = TimescaleWriter(
                args.database_url,
                batch_rows=args.batch,
                router=lambda r: [(scratch, _stats_values(r))],
            )
            for attempt in ("insert", "replay"):
                started = time.perf_counter()
                for i in range(0, len(data), args.batch):
                    chunk = data[i : i + args.batch]
                    if method == "copy_then_upsert":
                        writer.write(chunk)
                    else:
                        executemany_upsert(conn, scratch, chunk)
                elapsed = time.perf_counter() - started
                results[f"{method}/{attempt}"] = round(len(data) / elapsed)
            writer.close()
        conn.execute("DROP TABLE bench_llm_stats")
    for name, rate in results.items():
        print(f"{name:<34}{rate:>10,} rows/s")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
