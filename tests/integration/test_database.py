"""Schema, idempotent upserts, retries and retention against the real TimescaleDB."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from observatory.operators.sessions import SessionRow
from observatory.operators.stats import StatsRow
from observatory.schemas import migrations
from observatory.sinks.base import Backoff
from observatory.sinks.timescale import TimescaleWriter, drop_old_chunks


def stats_row(
    bucket: datetime,
    calls: int = 3,
    model: str = "gpt-4o",
    hourly=False,
    *,
    operation: str = "chat",
    tool: str = "",
    errors: int = 0,
) -> StatsRow:
    return StatsRow(
        bucket=bucket,
        window_seconds=3600 if hourly else 60,
        tenant="t",
        service="s",
        provider="openai",
        model=model,
        operation=operation,
        tool=tool,
        calls=calls,
        errors=errors,
        input_tokens=10 * calls,
        output_tokens=5,
        cached_input_tokens=0,
        reasoning_tokens=0,
        cost_usd=0.25 * calls,
        unpriced_calls=0,
        latency_p50_ms=1.0,
        latency_p95_ms=2.0,
        latency_p99_ms=3.0,
        latency_max_ms=4.0,
        ttft_p95_ms=None,
        exemplar_trace_ids=("ab" * 16,),
        hourly=hourly,
    )


def test_migrations_are_idempotent_and_make_hypertables(db):
    assert migrations.apply(db, progress=lambda _: None) == []
    hypertables = {
        row[0]
        for row in db.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
    }
    assert {"llm_stats", "llm_stats_hourly", "agent_sessions"} <= hypertables
    views = {
        row[0]
        for row in db.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema = 'public'"
        )
    }
    assert {
        "spend_by_tenant_model_daily",
        "latency_by_model_hourly",
        "top_sessions_by_cost",
        "unpriced_models",
    } <= views


def test_replayed_rows_overwrite_and_never_double_count(db, database_url):
    writer = TimescaleWriter(database_url)
    bucket = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    rows = [
        stats_row(bucket, calls=1),
        stats_row(bucket, calls=2),  # same key: last wins
        stats_row(bucket, model="o3"),
        stats_row(bucket, hourly=True),
    ]
    assert writer.write(rows) == 3
    assert writer.write(rows) == 3  # a replay
    got = dict(db.execute("SELECT model, calls FROM llm_stats").fetchall())
    assert got == {"gpt-4o": 2, "o3": 3}
    assert db.execute("SELECT count(*) FROM llm_stats_hourly").fetchone()[0] == 1
    session = SessionRow(
        tenant="t",
        session_id="s1",
        started_at=bucket,
        service="s",
        agent="a",
        first_seen=bucket,
        last_seen=bucket,
        llm_calls=1,
        tool_calls=2,
        distinct_tools=1,
        longest_tool_run=2,
        longest_run_tool="grep",
        input_tokens=1,
        output_tokens=1,
        cost_usd=0.1,
        unpriced_calls=0,
        errors=0,
        status="active",
        trace_id="",
    )
    writer.write([session])
    writer.write([replace(session, status="ended")])
    assert db.execute("SELECT status FROM agent_sessions").fetchall() == [("ended",)]
    writer.close()


def test_writer_retries_when_its_connection_is_killed(db, database_url):
    writer = TimescaleWriter(database_url, backoff=Backoff(initial_s=0.05, max_s=0.2))
    bucket = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    writer.write([stats_row(bucket)])
    pid = writer._connection().info.backend_pid
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    writer.write([stats_row(bucket + timedelta(minutes=1))])
    assert writer.retries >= 1
    assert db.execute("SELECT count(*) FROM llm_stats").fetchone()[0] == 2
    writer.close()


def test_rows_the_database_refuses_are_set_aside_and_the_rest_written(db, database_url, caplog):
    """A refused row would fail its batch forever: it is isolated, logged and counted."""
    writer = TimescaleWriter(database_url, worker="sink-test")
    bucket = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    good = [stats_row(bucket + timedelta(minutes=m)) for m in range(6)]
    refused = [
        stats_row(bucket, model="nul\x00model"),  # text cannot hold NUL
        stats_row(bucket, model=random.Random(1).randbytes(1500).hex()),  # index entry too big
        replace(stats_row(bucket, model="huge"), input_tokens=2**63),  # bigint out of range
    ]
    with caplog.at_level("ERROR", logger="observatory.sinks.timescale"):
        written = writer.write(good[:3] + refused + good[3:])
    assert written == 6 and writer.rows_rejected == 3
    assert db.execute("SELECT count(*) FROM llm_stats").fetchone()[0] == 6
    counter = db.execute(
        "SELECT value FROM pipeline_counters WHERE name = 'rows_rejected' AND worker = 'sink-test'"
    ).fetchone()
    assert counter == (3,)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and all("llm_stats refused a row (" in m for m in messages)
    assert any("SQLSTATE 54000" in m for m in messages)  # program_limit_exceeded
    assert any("'huge'" in m for m in messages)
    # The writer goes on normally afterwards.
    assert writer.write([stats_row(bucket + timedelta(minutes=30))]) == 1
    writer.close()


def test_writer_waits_for_the_database_and_then_catches_up(db, database_url):
    """An unreachable database blocks the write (backpressure) until it is back."""
    bad = TimescaleWriter(
        "postgresql://observatory:observatory@127.0.0.1:1/observatory",
        backoff=Backoff(initial_s=0.05, max_s=0.1, deadline_s=0.5),
    )
    try:
        bad.write([stats_row(datetime(2026, 1, 1, tzinfo=UTC))])
        raised = False
    except Exception as exc:
        raised = "gave up" in str(exc)
    assert raised, "a deadline must end the retries with a clear error"
    assert bad.retries >= 2


def test_retention_drops_only_old_chunks(db, database_url):
    writer = TimescaleWriter(database_url)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    writer.write([stats_row(now - timedelta(days=40)), stats_row(now)])
    dropped = drop_old_chunks(db, 30)
    assert dropped["llm_stats"] >= 1
    remaining = [r[0] for r in db.execute("SELECT bucket FROM llm_stats")]
    assert remaining == [now]
    writer.close()
